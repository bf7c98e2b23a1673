//! Policy: per-request rules that match requests and act on dialogs (profiles, limits,
//! timeouts, flags, vars, headers, routing, replies).
//!
//! The engine side is abstract: the engine implements [`RequestView`] over its parsed message
//! and [`DialogOps`] over its dialog record and forwarding state, then calls
//! [`Policy::on_request`] once per request. [`RulePolicy`] is the declarative implementation
//! compiled from `[[rule]]` in the config; an embedder may implement [`Policy`] by hand.
//!
//! Invariants:
//! - Evaluation is sans-IO and never panics. It allocates nothing once `scratch` has grown to
//!   the largest template expansion (templates expand into the caller's `scratch`).
//! - Rules run in file order; a rule's actions run in order. Evaluation stops at the first
//!   `reply`, at a `limit` that is over its maximum (which replies), at `terminate`, or after a
//!   matching rule with `stop = true`.
//!
//! # Custom policy
//! ```
//! use sipedge::policy::{DialogOps, Policy, RequestView, Verdict};
//!
//! /// Rejects INVITEs from user "spam", tracks everything else with a 1 h timeout.
//! struct NoSpam;
//!
//! impl Policy for NoSpam {
//!     fn on_request<'a>(
//!         &'a self,
//!         req: &dyn RequestView,
//!         ops: &mut dyn DialogOps,
//!         _scratch: &mut Vec<u8>,
//!     ) -> Verdict<'a> {
//!         if req.method() == b"INVITE" && req.from_user() == b"spam" {
//!             return Verdict::Reply { code: 603, reason: "Decline" };
//!         }
//!         if req.is_initial() {
//!             ops.set_track(true);
//!             ops.set_timeout(3600);
//!         }
//!         Verdict::Continue
//!     }
//! }
//! ```

mod rules;
pub mod spec;
pub mod template;

use std::net::IpAddr;

use crate::wire::Transport;

pub use rules::RulePolicy;
pub use spec::{ActionSpec, MatchSpec, RuleSpec};
pub use template::{Template, TemplateError};

/// One SIP request being processed (implemented by the engine over its parsed message).
///
/// Accessors return empty slices for absent parts. Users and hosts are raw URI bytes.
// `from_*` names the SIP From header here, not a constructor.
#[allow(clippy::wrong_self_convention)]
pub trait RequestView {
    /// Method, e.g. `b"INVITE"`.
    fn method(&self) -> &[u8];
    /// True for an initial request (no To-tag), false for an in-dialog request.
    fn is_initial(&self) -> bool;
    /// Transport the request arrived on.
    fn transport(&self) -> Transport;
    /// Request-URI.
    fn ruri(&self) -> &[u8];
    /// Request-URI user part.
    fn ruri_user(&self) -> &[u8];
    /// Request-URI host part.
    fn ruri_host(&self) -> &[u8];
    /// From URI.
    fn from_uri(&self) -> &[u8];
    /// From URI user part.
    fn from_user(&self) -> &[u8];
    /// From URI host part.
    fn from_host(&self) -> &[u8];
    /// To URI.
    fn to_uri(&self) -> &[u8];
    /// To URI user part.
    fn to_user(&self) -> &[u8];
    /// To URI host part.
    fn to_host(&self) -> &[u8];
    /// Source IP of the packet.
    fn src_ip(&self) -> IpAddr;
    /// Source port of the packet.
    fn src_port(&self) -> u16;
    /// Call-ID value.
    fn call_id(&self) -> &[u8];
    /// Value of the first header named `name` (case-insensitive, compact forms included).
    fn header(&self, name: &[u8]) -> Option<&[u8]>;
    /// Dialog variable `key` of the request's dialog, if any.
    fn dlg_var(&self, key: &[u8]) -> Option<&[u8]>;
}

/// Effects on the current dialog and on forwarding (implemented by the engine).
pub trait DialogOps {
    /// Whether the current dialog is in `profile` (with `value`, or any value if `None`).
    fn is_in_profile(&self, profile: &str, value: Option<&[u8]>) -> bool;
    /// Number of dialogs in `profile` (with `value`, or in total if `None`).
    fn profile_size(&self, profile: &str, value: Option<&[u8]>) -> u64;
    /// Track (or not) the dialog of this initial request.
    fn set_track(&mut self, on: bool);
    /// Add the dialog to `profile`; false if the profile is unknown.
    fn set_profile(&mut self, profile: &str, value: Option<&[u8]>) -> bool;
    /// Add the dialog to `profile` unless its size would exceed `max`; false = over limit.
    fn set_profile_limited(&mut self, profile: &str, value: Option<&[u8]>, max: u64) -> bool;
    /// Count one call against `profile` (of `value`) at `per_sec` calls per second with bursts
    /// of `burst`; false = over the rate. The default admits everything.
    fn profile_rate_ok(
        &mut self,
        _profile: &str,
        _value: Option<&[u8]>,
        _per_sec: u32,
        _burst: u32,
    ) -> bool {
        true
    }
    /// Remove the dialog from `profile`.
    fn unset_profile(&mut self, profile: &str, value: Option<&[u8]>);
    /// Set the dialog lifetime in seconds.
    fn set_timeout(&mut self, secs: u32);
    /// Set dialog flag `n` (0..=31).
    fn set_flag(&mut self, n: u8);
    /// Clear dialog flag `n` (0..=31).
    fn reset_flag(&mut self, n: u8);
    /// Whether dialog flag `n` is set.
    fn is_flag_set(&self, n: u8) -> bool;
    /// Set a dialog variable.
    fn set_var(&mut self, key: &[u8], value: &[u8]);
    /// Add a header to the forwarded request.
    fn add_header(&mut self, name: &[u8], value: &[u8]);
    /// Remove every header `name` from the forwarded request.
    fn remove_header(&mut self, name: &[u8]);
    /// Forward to the named target group instead of Route / R-URI.
    fn route_to_group(&mut self, group: &str);
    /// Terminate the current dialog (dialog_ng `dlg_terminate`).
    fn terminate(&mut self, reason: &[u8]);
}

/// Outcome of a policy run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Go on: forward the request (to the routed group, or by Route then R-URI). After a
    /// `terminate` action the engine has been told via [`DialogOps::terminate`].
    Continue,
    /// Drop the request silently (counted by the engine).
    Drop,
    /// Answer the request with this final reply and do not forward it.
    Reply {
        /// SIP code, 300..=699.
        code: u16,
        /// Reason phrase.
        reason: &'a str,
    },
}

/// A request policy: decides and applies per-request effects.
pub trait Policy: Send + Sync {
    /// Runs the policy for one request. `scratch` is a reusable buffer (contents unspecified
    /// on entry and exit) so that template expansion does not allocate.
    fn on_request<'a>(
        &'a self,
        req: &dyn RequestView,
        ops: &mut dyn DialogOps,
        scratch: &mut Vec<u8>,
    ) -> Verdict<'a>;
}
