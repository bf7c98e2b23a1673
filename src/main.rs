//! `sipedge` command line: `run` (default), `ctl`, `check-config`.
fn main() {
    println!("sipedge");
}
