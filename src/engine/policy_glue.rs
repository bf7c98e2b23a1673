//! The engine's side of the policy traits: a [`RequestView`] over a parsed request and a
//! [`DialogOps`] that records the decision (profiles, flags, vars, timeout, headers, route)
//! for the engine to apply.
//!
//! Invariants: profile memberships taken while evaluating are held in the decision and either
//! moved into the new dialog or released, never leaked; evaluating does not allocate unless a
//! rule sets vars or headers.

use std::net::IpAddr;

use super::dialogs::Decision;
use super::{Engine, Inbound, Settings, Shared};
use crate::dialog::Dialog;
use crate::policy::{DialogOps, RequestView, Verdict};
use crate::wire::{Transport, Uri, ValidRequest};

/// A request as the policy sees it.
pub(crate) struct View<'m, 'a> {
    msg: &'m ValidRequest<'m, 'a>,
    inb: &'m Inbound<'m>,
    initial: bool,
    ruri: Uri<'a>,
    from: Option<Uri<'a>>,
    to: Option<Uri<'a>>,
    vars: Option<arc_swap::Guard<Option<std::sync::Arc<crate::dialog::record::Vars>>>>,
}

impl<'m, 'a> View<'m, 'a> {
    pub(crate) fn new(
        msg: &'m ValidRequest<'m, 'a>,
        inb: &'m Inbound<'m>,
        initial: bool,
        dialog: Option<&Dialog>,
    ) -> Self {
        View {
            msg,
            inb,
            initial,
            ruri: msg.uri(),
            // Validation parsed From and To as name-addrs, not their URIs: these may fail.
            from: msg.from().parsed_uri().ok(),
            to: msg.to().parsed_uri().ok(),
            vars: dialog.map(|d| d.vars.load()),
        }
    }
}

fn user<'a>(u: &Option<Uri<'a>>) -> &'a [u8] {
    u.as_ref().and_then(|u| u.user).unwrap_or(&[])
}
fn host<'a>(u: &Option<Uri<'a>>) -> &'a [u8] {
    u.as_ref().map(|u| u.host).unwrap_or(&[])
}

impl RequestView for View<'_, '_> {
    fn method(&self) -> &[u8] {
        self.msg.method_bytes()
    }
    fn is_initial(&self) -> bool {
        self.initial
    }
    fn transport(&self) -> Transport {
        self.inb.transport
    }
    fn ruri(&self) -> &[u8] {
        self.msg.request_uri()
    }
    fn ruri_user(&self) -> &[u8] {
        self.ruri.user.unwrap_or(&[])
    }
    fn ruri_host(&self) -> &[u8] {
        self.ruri.host
    }
    fn from_uri(&self) -> &[u8] {
        self.msg.from().uri
    }
    fn from_user(&self) -> &[u8] {
        user(&self.from)
    }
    fn from_host(&self) -> &[u8] {
        host(&self.from)
    }
    fn to_uri(&self) -> &[u8] {
        self.msg.to().uri
    }
    fn to_user(&self) -> &[u8] {
        user(&self.to)
    }
    fn to_host(&self) -> &[u8] {
        host(&self.to)
    }
    fn src_ip(&self) -> IpAddr {
        self.inb.src.ip()
    }
    fn src_port(&self) -> u16 {
        self.inb.src.port()
    }
    fn call_id(&self) -> &[u8] {
        self.msg.call_id()
    }
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.msg.find_header(name)
    }
    fn dlg_var(&self, key: &[u8]) -> Option<&[u8]> {
        let g = self.vars.as_ref()?;
        let v = g.as_deref()?;
        v.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }
}

/// Effects recorded into a [`Decision`] (and applied to an existing dialog for sequential
/// requests).
pub(crate) struct Ops<'e> {
    pub shared: &'e Shared,
    pub settings: &'e Settings,
    pub decision: &'e mut Decision,
    pub dialog: Option<&'e Dialog>,
    pub terminate: Option<Vec<u8>>,
    pub now_ms: u64,
}

impl Ops<'_> {
    fn memberships(&self) -> &crate::dialog::profile::Memberships {
        match self.dialog {
            Some(d) => &d.profiles,
            None => &self.decision.memberships,
        }
    }
}

impl DialogOps for Ops<'_> {
    fn is_in_profile(&self, profile: &str, value: Option<&[u8]>) -> bool {
        let p = self.shared.profiles.load();
        p.index(profile)
            .is_some_and(|i| p.is_in(self.memberships(), i, value))
    }
    fn profile_size(&self, profile: &str, value: Option<&[u8]>) -> u64 {
        let p = self.shared.profiles.load();
        p.index(profile).map_or(0, |i| p.size(i, value))
    }
    fn set_track(&mut self, on: bool) {
        self.decision.track = Some(on);
    }
    fn set_profile(&mut self, profile: &str, value: Option<&[u8]>) -> bool {
        let p = self.shared.profiles.load();
        p.index(profile)
            .is_some_and(|i| p.set(self.memberships(), i, value).is_ok())
    }
    fn set_profile_limited(&mut self, profile: &str, value: Option<&[u8]>, max: u64) -> bool {
        let p = self.shared.profiles.load();
        match p.index(profile) {
            // An unknown profile cannot count calls; config validation prevents it.
            None => true,
            Some(i) => !matches!(
                p.try_set_with_limit(self.memberships(), i, value, max),
                Err(crate::dialog::profile::ProfileError::LimitExceeded)
            ),
        }
    }
    fn profile_rate_ok(
        &mut self,
        profile: &str,
        value: Option<&[u8]>,
        per_sec: u32,
        burst: u32,
    ) -> bool {
        let Some(rate) = crate::flood::Rate::new(per_sec, burst) else {
            return true;
        };
        let key = crate::flood::key_of_bytes(&[profile.as_bytes(), value.unwrap_or(&[])]);
        let ok = self
            .shared
            .flood
            .keyed_admit(key, &rate, self.now_ms.saturating_mul(1000));
        if !ok {
            self.decision.rate_limited = true;
        }
        ok
    }
    fn unset_profile(&mut self, profile: &str, value: Option<&[u8]>) {
        let p = self.shared.profiles.load();
        if let Some(i) = p.index(profile) {
            let _ = p.unset(self.memberships(), i, value);
        }
    }
    fn set_timeout(&mut self, secs: u32) {
        self.decision.timeout = Some(secs);
        if let Some(d) = self.dialog {
            d.set_timeout(self.now_ms, secs);
        }
    }
    fn set_flag(&mut self, n: u8) {
        if n < 32 {
            self.decision.flags |= 1 << n;
        }
        if let Some(d) = self.dialog {
            d.set_flag(n);
        }
    }
    fn reset_flag(&mut self, n: u8) {
        if n < 32 {
            self.decision.flags &= !(1 << n);
        }
        if let Some(d) = self.dialog {
            d.reset_flag(n);
        }
    }
    fn is_flag_set(&self, n: u8) -> bool {
        match self.dialog {
            Some(d) => d.is_flag_set(n),
            None => n < 32 && self.decision.flags & (1 << n) != 0,
        }
    }
    fn set_var(&mut self, key: &[u8], value: &[u8]) {
        match self.dialog {
            Some(d) => d.set_var(key, value),
            None => self.decision.vars.push((key.to_vec(), value.to_vec())),
        }
    }
    fn add_header(&mut self, name: &[u8], value: &[u8]) {
        self.decision
            .add_headers
            .push((name.to_vec(), value.to_vec()));
    }
    fn remove_header(&mut self, name: &[u8]) {
        self.decision.remove_headers.push(name.to_vec());
    }
    fn route_to_group(&mut self, group: &str) {
        self.decision.group = self.settings.groups.iter().position(|g| g.name == group);
    }
    fn terminate(&mut self, reason: &[u8]) {
        self.terminate = Some(reason.to_vec());
    }
}

impl Engine {
    /// Run the installed policy; returns the decision (with `reply` set when it answers) and
    /// the termination reason when a rule asked to terminate the current dialog.
    pub(crate) fn evaluate_policy(
        &mut self,
        inb: &Inbound<'_>,
        msg: &ValidRequest<'_, '_>,
        initial: bool,
        dialog: Option<&Dialog>,
    ) -> (Decision, Option<Vec<u8>>) {
        let mut decision = Decision::default();
        let policy = self.shared.policy.load_full();
        let Some(policy) = policy.as_ref() else {
            return (decision, None);
        };
        let settings = self.shared.settings.load_full();
        let view = View::new(msg, inb, initial, dialog);
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut ops = Ops {
            shared: &self.shared,
            settings: &settings,
            decision: &mut decision,
            dialog,
            terminate: None,
            now_ms: inb.now_ms,
        };
        let verdict = policy.on_request(&view, &mut ops, &mut scratch);
        let terminate = ops.terminate.take();
        match verdict {
            Verdict::Reply { code, reason } => decision.reply = Some((code, reason.to_string())),
            Verdict::Drop => decision.drop = true,
            Verdict::Continue => {}
        }
        self.scratch = scratch;
        (decision, terminate)
    }
}
