//! A lean policy (the `std` feature off) links wasi-libc itself for `malloc` and the `mem*`
//! functions, which Rust's standard library links otherwise. Nothing else of wasi-libc is used,
//! so the component imports no WASI interface.

fn main() {
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "wasm32");
    let std = std::env::var_os("CARGO_FEATURE_STD").is_some();
    if wasm && !std {
        println!("cargo:rustc-link-lib=c");
    }
}
