//! `runloom schedule list`: each cron trigger with its next fire times.

use super::plugin::{open_host, print_json, print_table};
use super::{ExitCode, Outcome};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::plugin::Registry;
use crate::trigger::cron::{ScheduleInfo, schedules};
use clap::Subcommand;

/// `runloom schedule …`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Each cron trigger of the runbooks: schedule, time zone, policies and next fire times.
    List {
        /// Fire times to show per trigger.
        #[arg(long, default_value_t = 3)]
        count: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(config: &Config, cmd: ScheduleCommand) -> Outcome {
    let ScheduleCommand::List { count, json } = cmd;
    let host = open_host(config)?;
    let registry = Registry::load(&host, &config.plugin_dir).await;
    let catalog = Catalog::load(&config.runbook_dir, config, &registry, &host).await;
    for e in catalog.errors() {
        eprintln!("{e}");
    }
    let list = schedules(&catalog, chrono::Utc::now(), count);
    if json {
        print_json(&serde_json::to_value(&list).unwrap_or_default(), false);
    } else if list.is_empty() {
        println!(
            "no cron triggers in {} runbooks",
            catalog.runbooks().count()
        );
    } else {
        print_table(
            &["RUNBOOK", "TRIGGER", "SCHEDULE", "ZONE", "POLICY", "NEXT"],
            &rows(&list),
        );
    }
    if catalog.errors().is_empty() {
        Ok(ExitCode::Success)
    } else {
        Ok(ExitCode::Definition)
    }
}

/// One row per fire time; the trigger's columns only on its first.
fn rows(list: &[ScheduleInfo]) -> Vec<[String; 6]> {
    let mut rows = Vec::new();
    for s in list {
        let mut policy = format!("missed={}", s.missed);
        if let Some(w) = &s.missed_window {
            policy.push_str(&format!("({w})"));
        }
        policy.push_str(&format!(" overlap={}", s.overlap));
        let first = [
            s.runbook.clone(),
            s.trigger.clone(),
            s.schedule.clone(),
            s.timezone.clone(),
            policy,
            s.next.first().cloned().unwrap_or_else(|| "never".into()),
        ];
        rows.push(first);
        for next in s.next.iter().skip(1) {
            rows.push(Default::default());
            if let Some(last) = rows.last_mut() {
                last[5] = next.clone();
            }
        }
    }
    rows
}
