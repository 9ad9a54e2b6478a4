//! Host bindings generated from `wit/plugin.wit`.
//!
//! WASI interfaces are mapped to wasmtime-wasi's own bindings and linked separately, so the
//! generated `Plugin::add_to_linker` adds only Runloom's interfaces.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:random": wasmtime_wasi::p2::bindings::random,
        "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
        "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
    },
});

pub(crate) use self::runloom::plugin::{exec, log, secrets, system, tls, types};
