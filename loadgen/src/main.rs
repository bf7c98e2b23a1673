//! `loadgen`: open-loop SIP load generator.
fn main() {
    println!("usage: loadgen <uac|uas|both> [flags]");
}
