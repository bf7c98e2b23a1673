//! Validated views of a message: [`ValidRequest`] and [`ValidResponse`], what
//! [`super::validate_request`] and [`super::validate_response`] proved, as fields
//! (smoltcp's check-then-trust: after `check_len` no accessor fails).
//!
//! # Invariants
//! - Only validation makes one: the fields are private and the constructors are visible to
//!   the `wire` module alone, where only `validate.rs` calls them. So holding a
//!   `ValidRequest` means the request passed [`super::validate_request`].
//! - Every field is read from the message once, during validation, and is exactly what the
//!   [`Message`] accessor of the same name returns, unwrapped: Call-ID (never empty), From and
//!   To (each one parsed name-addr), CSeq (its method equal to the request method for a
//!   request), the top Via, and for a request the method and the Request-URI (a parsed
//!   `sip`/`sips`/`tel` URI). The accessors named like [`Message`]'s shadow them and return
//!   the value instead of an `Option`; everything else derefs to the [`Message`].
//! - What validation does *not* require stays optional, as the RFCs allow: the From tag (an
//!   RFC 2543 peer may send none; a request without one creates no tracked dialog) and the To
//!   tag. A request reads both during validation (every request path needs them); a response
//!   leaves them to the message's memoised accessors.
//! - The top Via's branch is read as bytes, empty when absent (RFC 2543 again; a `branch=`
//!   without a value is a bad Via): the engine only keys and compares it, and has always read
//!   a missing one as empty.
//! - Nothing is allocated; a view is `Copy` and borrows the message.

use std::ops::Deref;

use super::message::Message;
use super::names::Method;
use super::uri::Uri;
use super::values::{CSeq, NameAddr, Via};

/// The accessors both views share (what [`Common`] holds, the branch, the message) and their
/// `Deref` to [`Message`]: one definition for requests and responses.
macro_rules! shared_accessors {
    ($view:ident) => {
        impl<'m, 'a> $view<'m, 'a> {
            /// The message itself.
            #[inline]
            pub fn msg(&self) -> &'m Message<'a> {
                self.msg
            }

            /// The Call-ID value (never empty).
            #[inline]
            pub fn call_id(&self) -> &'a [u8] {
                self.common.call_id
            }

            /// The From header, parsed.
            #[inline]
            pub fn from(&self) -> NameAddr<'a> {
                self.common.from
            }

            /// The To header, parsed.
            #[inline]
            pub fn to(&self) -> NameAddr<'a> {
                self.common.to
            }

            /// The whole To value as written (validation parsed it as one name-addr).
            #[inline]
            pub fn to_value(&self) -> &'a [u8] {
                self.common.to.span.get(self.msg.buf())
            }

            /// The CSeq header, parsed (a request's method is its own; a response's says
            /// which request it answers).
            #[inline]
            pub fn cseq(&self) -> CSeq<'a> {
                self.common.cseq
            }

            /// The topmost Via value.
            #[inline]
            pub fn top_via(&self) -> Via<'a> {
                self.common.top_via
            }

            /// The top Via's branch, empty when it has none (an RFC 2543 peer; never one of
            /// ours then): the transaction key the engine stores and compares.
            #[inline]
            pub fn branch(&self) -> &'a [u8] {
                self.branch
            }
        }

        impl<'a> Deref for $view<'_, 'a> {
            type Target = Message<'a>;

            #[inline]
            fn deref(&self) -> &Message<'a> {
                self.msg
            }
        }
    };
}

/// What requests and responses share: the headers every message must have, parsed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Common<'a> {
    /// The Call-ID value, never empty.
    pub(super) call_id: &'a [u8],
    /// The From header, parsed.
    pub(super) from: NameAddr<'a>,
    /// The To header, parsed.
    pub(super) to: NameAddr<'a>,
    /// The CSeq header, parsed.
    pub(super) cseq: CSeq<'a>,
    /// The topmost Via value.
    pub(super) top_via: Via<'a>,
}

impl<'a> Common<'a> {
    fn branch(&self) -> &'a [u8] {
        self.top_via.branch().unwrap_or_default()
    }
}

/// A request that passed [`super::validate_request`], with the fields validation read.
///
/// It derefs to its [`Message`]; the accessors below shadow the message's of the same name
/// and return what validation proved instead of an `Option`.
#[derive(Clone, Copy, Debug)]
pub struct ValidRequest<'m, 'a> {
    msg: &'m Message<'a>,
    method: Method,
    request_uri: &'a [u8],
    uri: Uri<'a>,
    branch: &'a [u8],
    from_tag: Option<&'a [u8]>,
    to_tag: Option<&'a [u8]>,
    common: Common<'a>,
}

impl<'m, 'a> ValidRequest<'m, 'a> {
    /// For `validate.rs` only, once every check passed.
    pub(super) fn new(
        msg: &'m Message<'a>,
        method: Method,
        request_uri: &'a [u8],
        uri: Uri<'a>,
        common: Common<'a>,
    ) -> Self {
        ValidRequest {
            msg,
            method,
            request_uri,
            uri,
            branch: common.branch(),
            // Every request path reads both tags (dialog and transaction matching).
            from_tag: msg.from_tag(),
            to_tag: msg.to_tag(),
            common,
        }
    }

    /// The method.
    #[inline]
    pub fn method(&self) -> Method {
        self.method
    }

    /// The Request-URI as written.
    #[inline]
    pub fn request_uri(&self) -> &'a [u8] {
        self.request_uri
    }

    /// The Request-URI, parsed (a `sip`, `sips` or `tel` URI).
    #[inline]
    pub fn uri(&self) -> Uri<'a> {
        self.uri
    }

    /// The whole From value as written (validation parsed it as one name-addr).
    #[inline]
    pub fn from_value(&self) -> &'a [u8] {
        self.common.from.span.get(self.msg.buf())
    }

    /// The From tag; `None` from an RFC 2543 peer that sent none.
    #[inline]
    pub fn from_tag(&self) -> Option<&'a [u8]> {
        self.from_tag
    }

    /// The From tag, empty when there is none: what keys and hashes take (the INVITE index
    /// key, the loop hash, our local To-tag), which never told the two apart.
    #[inline]
    pub fn from_tag_or_empty(&self) -> &'a [u8] {
        self.from_tag.unwrap_or_default()
    }

    /// The To tag; `None` on an initial request.
    #[inline]
    pub fn to_tag(&self) -> Option<&'a [u8]> {
        self.to_tag
    }
}

shared_accessors!(ValidRequest);

/// A response that passed [`super::validate_response`], with the fields validation read.
///
/// It derefs to its [`Message`]; the accessors below shadow the message's of the same name
/// and return what validation proved instead of an `Option`. The tags are the message's
/// (`Option`s, read on first use): not every response needs them.
#[derive(Clone, Copy, Debug)]
pub struct ValidResponse<'m, 'a> {
    msg: &'m Message<'a>,
    code: u16,
    branch: &'a [u8],
    common: Common<'a>,
}

impl<'m, 'a> ValidResponse<'m, 'a> {
    /// For `validate.rs` only, once every check passed.
    pub(super) fn new(msg: &'m Message<'a>, code: u16, common: Common<'a>) -> Self {
        ValidResponse {
            msg,
            code,
            branch: common.branch(),
            common,
        }
    }

    /// The status code, 100..=699.
    #[inline]
    pub fn code(&self) -> u16 {
        self.code
    }
}

shared_accessors!(ValidResponse);

#[cfg(test)]
#[path = "valid_tests.rs"]
mod tests;
