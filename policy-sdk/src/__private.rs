//! Glue between the generated component bindings and the SDK's types. Not public API: used by
//! [`export_policy!`](crate::export_policy) and the wasm32 paths of the SDK.

#![allow(missing_docs)]

#[allow(unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "export_policy_world",
        default_bindings_module: "writ_policy::__private::bindings",
        runtime_path: "writ_policy::__private::wit_bindgen::rt",
    });
}

pub use wit_bindgen;

use bindings::writ::policy::{host, types};

use crate::{Decision, Level, Outcome, Policy, Target, ToolCall, Window};

/// Runs policy `P` on one call from the host: the body of the exported `evaluate`.
pub fn run<P: Policy>(call: types::ToolCall) -> types::Decision {
    #[cfg(feature = "std")]
    std::panic::set_hook(alloc::boxed::Box::new(|info| {
        host::log(
            host::Level::Error,
            &alloc::format!("{}{info}", crate::PANIC_LOG_PREFIX),
        );
    }));
    let call = ToolCall::from_host(
        call.action,
        call.arguments,
        call.context,
        call.agent_id,
        call.session_id,
        call.tenant_id,
        call.target.map(|t| Target {
            service: t.service,
            method: t.method,
            url: t.url,
            destructive: t.destructive,
        }),
        call.timestamp_ms,
    );
    into_wit(P::evaluate(&call))
}

fn into_wit(decision: Decision) -> types::Decision {
    types::Decision {
        outcome: match decision.outcome {
            Outcome::Allow => types::Outcome::Allow,
            Outcome::Block => types::Outcome::Block,
            Outcome::Escalate => types::Outcome::Escalate,
        },
        reason: decision.reason,
        codes: decision.codes,
        charges: decision
            .charges
            .into_iter()
            .map(|c| types::Charge {
                counter: c.counter,
                amount: c.amount,
            })
            .collect(),
    }
}

pub(crate) fn log(level: Level, message: &str) {
    let level = match level {
        Level::Debug => host::Level::Debug,
        Level::Info => host::Level::Info,
        Level::Warn => host::Level::Warn,
        Level::Error => host::Level::Error,
    };
    host::log(level, message);
}

pub(crate) fn key_id() -> alloc::string::String {
    host::key_id()
}

pub(crate) fn usage(counter: &str, window: Window) -> f64 {
    let window = match window {
        Window::Session => types::Window::Session,
        Window::Minute => types::Window::Minute,
        Window::Hour => types::Window::Hour,
        Window::Day => types::Window::Day,
        Window::AllTime => types::Window::AllTime,
    };
    host::usage(counter, window)
}

/// What the standard library gives a policy and a lean one (the `std` feature off) must be
/// given: a heap, a panic handler and the canonical ABI's `cabi_realloc`. The heap is
/// wasi-libc's `malloc`, as under std (Rust's `dlmalloc` crate grows memory a page at a time,
/// and growing a pooled memory costs more than the whole call).
#[cfg(not(feature = "std"))]
#[allow(unsafe_code)]
mod lean {
    use core::alloc::{GlobalAlloc, Layout};

    use super::host;

    /// Largest alignment wasi-libc's `malloc` guarantees.
    const MALLOC_ALIGN: usize = 16;

    unsafe extern "C" {
        fn malloc(size: usize) -> *mut u8;
        fn aligned_alloc(align: usize, size: usize) -> *mut u8;
        fn realloc(ptr: *mut u8, size: usize) -> *mut u8;
        fn free(ptr: *mut u8);
    }

    struct LibcAlloc;

    // SAFETY: the functions are wasi-libc's allocator, which meets `GlobalAlloc`'s contract for
    // any alignment up to `MALLOC_ALIGN` through `malloc`/`realloc`, and above it through
    // `aligned_alloc`; a policy instance is single-threaded.
    unsafe impl GlobalAlloc for LibcAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: `layout` has a non-zero size (the trait's precondition).
            unsafe {
                if layout.align() <= MALLOC_ALIGN {
                    malloc(layout.size())
                } else {
                    aligned_alloc(layout.align(), layout.size())
                }
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            // SAFETY: `ptr` came from `alloc` or `realloc` above (the trait's precondition).
            unsafe { free(ptr) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as for `alloc` and `dealloc`; above `MALLOC_ALIGN`, a new block is
            // allocated and the old one's bytes that fit are copied before it is freed.
            unsafe {
                if layout.align() <= MALLOC_ALIGN {
                    return realloc(ptr, new_size);
                }
                let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                if !new.is_null() {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    free(ptr);
                }
                new
            }
        }
    }

    #[global_allocator]
    static ALLOCATOR: LibcAlloc = LibcAlloc;

    /// The canonical ABI's allocator entry point, through which the host passes the call's
    /// strings and lists in (under std, wasi-libc exports it).
    // SAFETY: the host calls it per the canonical ABI: `old_ptr`/`old_len` name a block it got
    // from this function (or are null/0), and `align` is a power of two.
    #[unsafe(export_name = "cabi_realloc")]
    unsafe extern "C" fn cabi_realloc(
        old_ptr: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
    ) -> *mut u8 {
        if new_len == 0 {
            return align as *mut u8;
        }
        // SAFETY: see above; sizes are non-zero.
        let ptr = unsafe {
            let new = Layout::from_size_align_unchecked(new_len, align);
            if old_len == 0 {
                ALLOCATOR.alloc(new)
            } else {
                let old = Layout::from_size_align_unchecked(old_len, align);
                ALLOCATOR.realloc(old_ptr, old, new_len)
            }
        };
        if ptr.is_null() {
            core::arch::wasm32::unreachable();
        }
        ptr
    }

    /// A panic traps the instance (the call is blocked) after its message reaches the
    /// gateway's log, as under std.
    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        host::log(
            host::Level::Error,
            &alloc::format!("{}{info}", crate::PANIC_LOG_PREFIX),
        );
        core::arch::wasm32::unreachable()
    }
}
