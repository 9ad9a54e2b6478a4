//! The template plugin. Copy this directory to start a new one (see README.md).

use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Input of `greet`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GreetInput {
    /// Who to greet.
    pub name: String,
}

/// Output of `greet`.
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct GreetOutput {
    /// The greeting.
    pub greeting: String,
}

/// Input of `shout`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShoutInput {
    /// What to shout into the run's log.
    pub message: String,
}

/// Output of `shout`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ShoutOutput {
    /// How many characters were shouted.
    pub length: usize,
}

struct Hello;

impl Plugin for Hello {
    const NAME: &'static str = "hello";
    const DESCRIPTION: &'static str = "The template plugin: greets, and shouts into the log.";

    fn actions() -> Actions {
        Actions::new()
            .read("greet", "Return a greeting for `name`.", greet)
            .mutate(
                "shout",
                "Write `message` to the run's log in capitals.",
                shout,
            )
    }
}

/// Pure logic: unit-tested natively below.
pub fn greeting(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::invalid_input("`name` must not be empty"));
    }
    Ok(format!("hello, {name}"))
}

fn greet(input: GreetInput, _ctx: &CallContext) -> Result<GreetOutput, Error> {
    Ok(GreetOutput {
        greeting: greeting(&input.name)?,
    })
}

fn shout(input: ShoutInput, ctx: &CallContext) -> Result<ShoutOutput, Error> {
    let loud = input.message.to_uppercase();
    runloom_sdk::log::info(&loud, &[("step", &ctx.step_id)]);
    Ok(ShoutOutput {
        length: loud.chars().count(),
    })
}

export_plugin!(Hello);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_trimmed_name() {
        assert_eq!(greeting("  ops ").unwrap(), "hello, ops");
    }

    #[test]
    fn refuses_an_empty_name() {
        assert!(matches!(greeting(" "), Err(Error::InvalidInput(_))));
    }
}
