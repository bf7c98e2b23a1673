//! Fuzz target `parse_edit`: parse, then the proxy's edit set (insert Via, received/rport,
//! Record-Route, remove top Route, decrement Max-Forwards; or remove top Via on a response)
//! and serialize. Invariants: nothing panics; `write` produces exactly `output_len` bytes;
//! when the input validated, the output re-parses and validates too (unless the input sat at
//! the `MAX_HEADERS`/`MAX_HEAD_BYTES` limits and the added lines pushed it over: 513).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipedge::wire::{
    Edits, MAX_HEAD_BYTES, MAX_HEADERS, ParseError, parse, validate_request, validate_response,
};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = parse(data) else { return };
    let valid = if m.is_request() {
        validate_request(&m).is_ok()
    } else {
        validate_response(&m).is_ok()
    };
    let mut e = Edits::new(&m);
    let mut ok = true;
    if m.is_request() {
        ok &= e
            .insert_via(b"SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKfuzz")
            .is_ok();
        ok &= e
            .set_received_rport(Some(b"198.51.100.7"), Some(5062))
            .is_ok();
        ok &= e
            .insert_record_route(b"<sip:203.0.113.1;lr;did=f1>")
            .is_ok();
        if m.routes().next().is_some() {
            ok &= e.remove_top_route().is_ok();
        }
        ok &= e.decrement_max_forwards().is_ok();
    } else if m.vias().nth(1).is_some() {
        ok &= e.remove_top_via().is_ok();
    }
    let mut out = Vec::new();
    if e.write(&mut out).is_err() {
        return;
    }
    assert_eq!(out.len(), e.output_len());
    if valid && ok {
        // The edits add up to 3 header lines and a few hundred bytes: a message at the
        // capacity limits may legitimately outgrow them (the next hop answers 513).
        let near_limit = m.headers().len() + 3 > MAX_HEADERS || m.len() + 512 > MAX_HEAD_BYTES;
        let f = match parse(&out) {
            Ok(f) => f,
            Err(ParseError::TooManyHeaders | ParseError::HeadersTooLarge) if near_limit => return,
            Err(e) => panic!("edited valid message does not re-parse: {e:?}"),
        };
        if f.is_request() {
            validate_request(&f).expect("edited valid request validates");
        } else if m.vias().nth(1).is_some() {
            validate_response(&f).expect("edited valid response validates");
        }
    }
});
