//! A lean policy (`writ-policy` without `std`) that misbehaves on request, so the sandbox's
//! tests can check what the SDK gives a `no_std` policy in place of the standard library: its
//! heap, its panic handler and the canonical ABI's `cabi_realloc`.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use core::hint::black_box;
use writ_policy::{Decision, Policy, ToolCall};

/// Misbehaves according to the call's action.
pub struct LeanHostile;

/// A block whose alignment is above what `malloc` guarantees.
#[repr(align(64))]
struct Aligned([u8; 64]);

impl Policy for LeanHostile {
    fn evaluate(call: &ToolCall) -> Decision {
        match call.action() {
            "panic" => panic!("lean panic"),
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(Vec::<u8>::with_capacity(1 << 20)));
                }
            }
            // Grows a vector by doubling (each step a `realloc`), allocates over-aligned
            // blocks, and reads the arguments the host passed in through `cabi_realloc`.
            "allocate" => {
                let mut grown: Vec<u64> = Vec::new();
                for i in 0..100_000u64 {
                    grown.push(i);
                }
                let aligned: Vec<Aligned> = (0..100).map(|i| Aligned([i as u8; 64])).collect();
                let misaligned = aligned
                    .iter()
                    .filter(|a| !(*a as *const Aligned as usize).is_multiple_of(64))
                    .count();
                let bytes: u64 = aligned.iter().map(|a| u64::from(a.0[63])).sum();
                let text = call
                    .arg::<alloc::string::String>("text")
                    .unwrap_or_default();
                Decision::allow(format!(
                    "sum {} misaligned {misaligned} bytes {bytes} text {}",
                    grown.iter().sum::<u64>(),
                    text.len()
                ))
            }
            _ => Decision::allow("well behaved"),
        }
    }
}

writ_policy::export_policy!(LeanHostile);
