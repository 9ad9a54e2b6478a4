//! The [`Plugin`] trait and the typed action table behind `describe` and `invoke`.

use crate::bindings::runloom::plugin::types::{Action, Manifest};
use crate::{ActionKind, CallContext, Error};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A Runloom plugin: a name, a description and a table of actions.
///
/// Export it with [`export_plugin!`](crate::export_plugin). The plugin's version is the crate
/// version from its `Cargo.toml`.
pub trait Plugin {
    /// Plugin name in kebab-case, as runbooks and `runloom.toml` refer to it.
    const NAME: &'static str;
    /// One sentence for operators: what the plugin is for.
    const DESCRIPTION: &'static str;
    /// The actions the plugin offers.
    fn actions() -> Actions;
}

type Handler = Box<dyn Fn(&str, &CallContext) -> Result<String, Error>>;

struct Entry {
    name: &'static str,
    description: &'static str,
    kind: ActionKind,
    input_schema: fn() -> String,
    output_schema: fn() -> String,
    run: Handler,
}

/// The table of a plugin's actions, built with [`Actions::read`] and [`Actions::mutate`].
///
/// Each action is a plain function from a typed input to a typed output. The SDK parses the
/// input (a parse error becomes [`Error::InvalidInput`]), serialises the output, and derives
/// both JSON Schemas from the types.
#[derive(Default)]
pub struct Actions {
    entries: Vec<Entry>,
}

impl Actions {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an action that only observes (a check, a query, a listing).
    pub fn read<I, O>(
        self,
        name: &'static str,
        description: &'static str,
        run: fn(I, &CallContext) -> Result<O, Error>,
    ) -> Self
    where
        I: DeserializeOwned + JsonSchema + 'static,
        O: Serialize + JsonSchema + 'static,
    {
        self.add(name, description, ActionKind::Read, run)
    }

    /// Add an action that changes something. During a dry-run the engine records the call as
    /// planned and does not invoke it.
    pub fn mutate<I, O>(
        self,
        name: &'static str,
        description: &'static str,
        run: fn(I, &CallContext) -> Result<O, Error>,
    ) -> Self
    where
        I: DeserializeOwned + JsonSchema + 'static,
        O: Serialize + JsonSchema + 'static,
    {
        self.add(name, description, ActionKind::Mutate, run)
    }

    fn add<I, O>(
        mut self,
        name: &'static str,
        description: &'static str,
        kind: ActionKind,
        run: fn(I, &CallContext) -> Result<O, Error>,
    ) -> Self
    where
        I: DeserializeOwned + JsonSchema + 'static,
        O: Serialize + JsonSchema + 'static,
    {
        let run: Handler = Box::new(move |input: &str, ctx: &CallContext| {
            let input: I = serde_json::from_str(input)
                .map_err(|e| Error::invalid_input(format!("action `{name}`: {e}")))?;
            let output = run(input, ctx)?;
            serde_json::to_string(&output)
                .map_err(|e| Error::failed(format!("action `{name}`: cannot encode output: {e}")))
        });
        self.entries.push(Entry {
            name,
            description,
            kind,
            input_schema: schema_of::<I>,
            output_schema: schema_of::<O>,
            run,
        });
        self
    }
}

fn schema_of<T: JsonSchema>() -> String {
    schemars::schema_for!(T).as_value().to_string()
}

/// `handler.describe` for `P`. Called by the code `export_plugin!` generates.
pub fn describe<P: Plugin>(version: &str) -> Manifest {
    Manifest {
        name: P::NAME.to_string(),
        version: version.to_string(),
        description: P::DESCRIPTION.to_string(),
        actions: P::actions()
            .entries
            .iter()
            .map(|e| Action {
                name: e.name.to_string(),
                description: e.description.to_string(),
                kind: e.kind,
                input_schema: (e.input_schema)(),
                output_schema: (e.output_schema)(),
            })
            .collect(),
    }
}

/// `handler.invoke` for `P`. Called by the code `export_plugin!` generates.
pub fn invoke<P: Plugin>(action: &str, input: &str, ctx: &CallContext) -> Result<String, Error> {
    let actions = P::actions();
    match actions.entries.iter().find(|e| e.name == action) {
        Some(entry) => (entry.run)(input, ctx),
        None => {
            let known: Vec<&str> = actions.entries.iter().map(|e| e.name).collect();
            Err(Error::invalid_input(format!(
                "plugin `{}` has no action `{action}` (it has: {})",
                P::NAME,
                known.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, JsonSchema)]
    struct In {
        n: u32,
    }

    #[derive(Serialize, JsonSchema)]
    struct Out {
        doubled: u32,
    }

    fn double(input: In, _: &CallContext) -> Result<Out, Error> {
        Ok(Out {
            doubled: input.n * 2,
        })
    }

    fn reset(_: In, _: &CallContext) -> Result<Out, Error> {
        Err(Error::failed("nothing to reset"))
    }

    struct Doubler;
    impl Plugin for Doubler {
        const NAME: &'static str = "doubler";
        const DESCRIPTION: &'static str = "Doubles numbers.";
        fn actions() -> Actions {
            Actions::new().read("double", "Double `n`.", double).mutate(
                "reset",
                "Reset nothing.",
                reset,
            )
        }
    }

    fn ctx() -> CallContext {
        CallContext {
            run_id: String::new(),
            step_id: String::new(),
            idempotency_key: String::new(),
            dry_run: false,
        }
    }

    #[test]
    fn describe_lists_actions_with_kinds_and_schemas() {
        let m = describe::<Doubler>("1.2.3");
        assert_eq!(m.name, "doubler");
        assert_eq!(m.version, "1.2.3");
        let kinds: Vec<_> = m
            .actions
            .iter()
            .map(|a| (a.name.as_str(), a.kind))
            .collect();
        assert_eq!(
            kinds,
            [("double", ActionKind::Read), ("reset", ActionKind::Mutate)]
        );
        let schema: serde_json::Value = serde_json::from_str(&m.actions[0].input_schema).unwrap();
        assert_eq!(schema["properties"]["n"]["type"], "integer");
        assert_eq!(schema["required"][0], "n");
    }

    #[test]
    fn invoke_parses_input_and_encodes_output() {
        let out = invoke::<Doubler>("double", r#"{"n": 21}"#, &ctx()).unwrap();
        assert_eq!(out, r#"{"doubled":42}"#);
    }

    #[test]
    fn bad_input_is_invalid_input_naming_the_action() {
        match invoke::<Doubler>("double", r#"{"n": "x"}"#, &ctx()) {
            Err(Error::InvalidInput(m)) => assert!(m.starts_with("action `double`:"), "{m}"),
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn unknown_action_is_invalid_input_listing_known_ones() {
        match invoke::<Doubler>("triple", "{}", &ctx()) {
            Err(Error::InvalidInput(m)) => {
                assert_eq!(
                    m,
                    "plugin `doubler` has no action `triple` (it has: double, reset)"
                )
            }
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn handler_errors_pass_through() {
        assert!(matches!(
            invoke::<Doubler>("reset", r#"{"n": 1}"#, &ctx()),
            Err(Error::Failed(m)) if m == "nothing to reset"
        ));
    }
}
