//! Write Runloom plugins in Rust.
//!
//! A plugin is a WebAssembly component (built for `wasm32-wasip2`) that offers named actions.
//! Each action takes a JSON input and returns a JSON output; both are described by JSON
//! Schemas derived from your Rust types. The whole of a plugin:
//!
//! ```ignore
//! use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct GreetInput { name: String }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct GreetOutput { greeting: String }
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     const NAME: &'static str = "hello";
//!     const DESCRIPTION: &'static str = "Greets whoever it is asked to.";
//!     fn actions() -> Actions {
//!         Actions::new().read("greet", "Return a greeting for `name`.", greet)
//!     }
//! }
//!
//! fn greet(input: GreetInput, _ctx: &CallContext) -> Result<GreetOutput, Error> {
//!     Ok(GreetOutput { greeting: format!("hello, {}", input.name) })
//! }
//!
//! export_plugin!(Hello);
//! ```
//!
//! Host capabilities live in modules: [`log`] (structured log lines), [`secret`] (granted
//! secrets), [`exec`] (granted programs), [`http`] (outgoing HTTP to granted hosts), [`net`]
//! (outgoing TCP to granted hosts) and [`fs`] (granted directories). Anything not granted to
//! the plugin fails with [`Error::Denied`].
//!
//! Pure logic unit-tests natively with `cargo test -p <plugin>`; host calls only work inside
//! the engine, so keep them at the edges of your code.
//!
//! The same crate writes runbook bodies as components: see [`runbook`] and
//! [`export_runbook!`].
#![deny(missing_docs)]

extern crate self as runloom_sdk;

pub mod check;
pub mod exec;
pub mod fs;
pub mod http;
pub mod log;
pub mod net;
mod plugin;
pub mod runbook;
pub mod system;
pub mod tls;

pub use plugin::{Actions, Plugin};

#[doc(hidden)]
pub use plugin::{describe as __describe, invoke as __invoke};

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Bindings generated from `wit/plugin.wit`. Plugin code rarely needs them directly.
#[allow(missing_docs, unreachable_pub, clippy::all, reason = "generated code")]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../wit",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_plugin_bindings",
        default_bindings_module: "runloom_sdk::bindings",
        runtime_path: "runloom_sdk::__wit_bindgen::rt",
    });
}

pub use bindings::runloom::plugin::types::{ActionKind, CallContext, Denial, Error};

impl Error {
    /// The input does not fit the action; retrying the same input cannot help.
    pub fn invalid_input(message: impl std::fmt::Display) -> Self {
        Error::InvalidInput(message.to_string())
    }

    /// The action ran and failed.
    pub fn failed(message: impl std::fmt::Display) -> Self {
        Error::Failed(message.to_string())
    }

    /// A transient failure; the engine may retry the step if the runbook allows it.
    pub fn retryable(message: impl std::fmt::Display) -> Self {
        Error::Retryable(message.to_string())
    }

    /// The action needed `capability` on `target` (`connect to`, `example.org:443`) and it
    /// was not granted.
    pub fn denied(capability: impl Into<String>, target: impl Into<String>) -> Self {
        Error::Denied(Denial {
            capability: capability.into(),
            target: target.into(),
        })
    }
}

impl Denial {
    /// The denial as an operator reads it: ``may not connect to `example.org:443`: not granted``.
    pub fn message(&self) -> String {
        format!("may not {} `{}`: not granted", self.capability, self.target)
    }
}

/// The value of the secret `name`, if the operator granted it to this plugin.
///
/// Secret values are masked in every log line and stored record, so logging one is safe but
/// useless.
pub fn secret(name: &str) -> Result<String, Error> {
    bindings::runloom::plugin::secrets::get(name).map_err(Error::Denied)
}

/// Export a type implementing [`Plugin`] as the component's `handler`.
///
/// Call it once, at the top level of the plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        #[allow(dead_code, reason = "exported only when built for WebAssembly")]
        pub struct __RunloomHandler;

        impl $crate::bindings::exports::runloom::plugin::handler::Guest for __RunloomHandler {
            fn describe() -> $crate::bindings::runloom::plugin::types::Manifest {
                $crate::__describe::<$plugin>(env!("CARGO_PKG_VERSION"))
            }

            fn invoke(
                action: String,
                input: String,
                context: $crate::CallContext,
            ) -> Result<String, $crate::Error> {
                $crate::__invoke::<$plugin>(&action, &input, &context)
            }
        }

        // Export names such as `runloom:plugin/handler@0.1.0#invoke` only make sense in a
        // component; a native build (for unit tests) must not export them.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_plugin_bindings!(__RunloomHandler with_types_in $crate::bindings);
    };
}

/// Export a function as the component's runbook body (`runloom:plugin/body.run`).
///
/// The function takes nothing and returns `Result<O, RunError>` for any serialisable `O`,
/// the run's output. Call the macro once, at the top level of the runbook crate.
#[macro_export]
macro_rules! export_runbook {
    ($run:path) => {
        #[doc(hidden)]
        #[allow(dead_code, reason = "exported only when built for WebAssembly")]
        pub struct __RunloomRunbook;

        impl $crate::runbook::bindings::exports::runloom::plugin::body::Guest for __RunloomRunbook {
            fn run() -> ::core::result::Result<::std::string::String, $crate::runbook::RunError> {
                $crate::runbook::__run($run)
            }
        }

        // As in `export_plugin!`: export names only make sense in a component.
        #[cfg(target_arch = "wasm32")]
        $crate::runbook::bindings::__export_runbook_bindings!(
            __RunloomRunbook with_types_in $crate::runbook::bindings
        );
    };
}
