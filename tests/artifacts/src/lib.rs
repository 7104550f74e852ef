//! Paths of the guest components `build.rs` builds from `example-policies/` and
//! `tests/guests/`, as constants.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
