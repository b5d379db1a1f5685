//! The settings qmgr reads, once, from the skeleton's context.

use std::collections::HashMap;
use std::time::Duration;

use postern_lib::skeleton::Context;

/// qmgr's view of main.toml and master.toml.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most messages in memory.
    pub active_limit: usize,
    /// Most recipients in memory.
    pub recipient_limit: usize,
    /// Jobs per transport when master.toml does not say.
    pub default_process_limit: usize,
    /// maxproc of each `NAME/unix` service.
    pub maxproc: HashMap<String, usize>,
    default_conc: usize,
    default_rcpt: usize,
    local_conc: usize,
    local_rcpt: usize,
    smtp_conc: usize,
    smtp_rcpt: usize,
    initial_conc: usize,
    smtp_initial_conc: usize,
    /// Failed cohorts after which a destination is throttled as dead.
    pub cohort_limit: f64,
    /// Back-off bounds.
    pub min_backoff: u64,
    /// Back-off bounds.
    pub max_backoff: u64,
    /// Deferred queue scan interval.
    pub queue_run_delay: Duration,
    /// Lifetime of a message in seconds.
    pub lifetime: u64,
    /// Delivery agent time limit.
    pub ipc_timeout: Duration,
    /// Age in seconds after which a deferred message's sender is warned; 0: never.
    pub delay_warning: u64,
}

impl Settings {
    /// From the context.
    pub fn new(ctx: &Context) -> Settings {
        let m = &ctx.main;
        // The registry's bounds (main.toml) and master.toml's check (maxproc at least 1,
        // maximal_backoff_time at least minimal_backoff_time) hold already: taken as they are.
        let maxproc = ctx
            .config
            .services
            .iter()
            .filter(|s| s.entry.kind.as_str() == "unix")
            .map(|s| (s.entry.name.clone(), s.maxproc as usize))
            .collect();
        Settings {
            active_limit: m.qmgr_message_active_limit as usize,
            recipient_limit: m.qmgr_message_recipient_limit as usize,
            default_process_limit: m.default_process_limit as usize,
            maxproc,
            default_conc: m.default_destination_concurrency_limit as usize,
            default_rcpt: m.default_destination_recipient_limit as usize,
            local_conc: m.local_destination_concurrency_limit as usize,
            local_rcpt: m.local_destination_recipient_limit as usize,
            smtp_conc: m.smtp_destination_concurrency_limit as usize,
            smtp_rcpt: m.smtp_destination_recipient_limit as usize,
            initial_conc: m.initial_destination_concurrency as usize,
            smtp_initial_conc: m.smtp_initial_destination_concurrency as usize,
            cohort_limit: f64::from(m.default_destination_concurrency_failed_cohort_limit),
            min_backoff: m.minimal_backoff_time.0,
            max_backoff: m.maximal_backoff_time.0,
            queue_run_delay: Duration::from_secs(m.queue_run_delay.0),
            lifetime: m.maximal_queue_lifetime.0,
            ipc_timeout: Duration::from_secs(m.ipc_timeout.0),
            delay_warning: m.delay_warning_time.0,
        }
    }

    /// Parallel jobs to one destination of `transport`.
    pub fn concurrency(&self, transport: &str) -> usize {
        match transport {
            "local" => self.local_conc,
            "smtp" => self.smtp_conc,
            _ => self.default_conc,
        }
    }

    /// Parallel jobs to a destination of `transport` at first (slow start), at most the
    /// concurrency limit.
    pub fn initial_concurrency(&self, transport: &str) -> usize {
        let initial = match transport {
            "smtp" if self.smtp_initial_conc > 0 => self.smtp_initial_conc,
            _ => self.initial_conc,
        };
        initial.clamp(1, self.concurrency(transport))
    }

    /// Recipients per job for `transport`.
    pub fn recipients_per_job(&self, transport: &str) -> usize {
        match transport {
            "local" => self.local_rcpt,
            "smtp" => self.smtp_rcpt,
            _ => self.default_rcpt,
        }
        .min(postern_lib::proto::deliver::MAX_RECIPIENTS)
    }

    /// Parallel jobs for `transport` in all.
    pub fn process_limit(&self, transport: &str) -> usize {
        self.maxproc
            .get(transport)
            .copied()
            .unwrap_or(self.default_process_limit)
    }

    /// Seconds until the next attempt of a message `age` seconds old.
    pub fn backoff(&self, age: u64) -> u64 {
        age.clamp(self.min_backoff, self.max_backoff)
    }
}
