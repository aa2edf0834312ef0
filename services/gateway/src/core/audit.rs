//! The audit log: every change made through this gateway — alias moves and
//! rollbacks, model loads and unloads, collections created and deleted,
//! documents ingested — whichever face it came in by (gRPC, HTTP, MCP), with
//! who asked, when, and how it ended.
//!
//! Kept in memory (the newest [`CAPACITY`] entries, for the console's
//! Access & audit page) and written to the log as `audit` events, which is
//! where a durable record lives (the log pipeline). The registry keeps its
//! own durable history of alias moves (`AliasHistory`), which the gateway
//! stamps with the caller's name.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Value as Json, json};

/// Entries kept in memory.
pub const CAPACITY: usize = 2000;

/// One change.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its place in this gateway's sequence (1, 2, …), so a reader can ask
    /// for what came after the last entry it saw.
    pub seq: u64,
    pub at_ms: u64,
    /// The caller's name (`anonymous` when authentication is off).
    pub who: String,
    /// What was done: `alias.move`, `alias.rollback`, `model.load`, ….
    pub action: &'static str,
    /// What it was done to (`model/alias`, a collection, a model).
    pub target: String,
    /// The request's particulars (`v3 → v4`, a reason).
    pub detail: String,
    /// `ok`, or the refusal's message.
    pub outcome: String,
}

/// The bounded in-memory log.
#[derive(Debug, Default)]
pub struct Audit {
    entries: Mutex<(u64, VecDeque<Entry>)>,
}

/// Who the current request's caller is.
pub fn who() -> String {
    crate::auth::current_caller().map_or_else(|| "anonymous".to_owned(), |c| c.name.clone())
}

impl Audit {
    /// Records one change (and logs it).
    pub fn record(&self, action: &'static str, target: String, detail: String, outcome: String) {
        let who = who();
        tracing::info!(
            target: "audit",
            action,
            %target,
            %detail,
            %outcome,
            caller = %who,
            "audit"
        );
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let seq = g.0;
        if g.1.len() == CAPACITY {
            g.1.pop_front();
        }
        g.1.push_back(Entry {
            seq,
            at_ms,
            who,
            action,
            target,
            detail,
            outcome,
        });
    }

    /// Records how `result` ended.
    pub fn outcome<T, E: std::fmt::Display>(
        &self,
        action: &'static str,
        target: impl Into<String>,
        detail: impl Into<String>,
        result: &Result<T, E>,
    ) {
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        self.record(action, target.into(), detail.into(), outcome);
    }

    /// The newest `limit` entries, newest first, with sequence numbers
    /// below `before` (0: from the newest).
    pub fn page(&self, before: u64, limit: usize) -> Json {
        let g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let items: Vec<Json> =
            g.1.iter()
                .rev()
                .filter(|e| before == 0 || e.seq < before)
                .take(limit)
                .map(|e| {
                    json!({
                        "seq": e.seq, "at_ms": e.at_ms, "who": e.who, "action": e.action,
                        "target": e.target, "detail": e.detail, "outcome": e.outcome,
                    })
                })
                .collect();
        let next = items
            .last()
            .and_then(|e| e["seq"].as_u64())
            .filter(|&s| g.1.front().is_some_and(|f| f.seq < s));
        json!({ "entries": items, "next_before": next, "kept": CAPACITY })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_and_paged_newest_first() {
        let a = Audit::default();
        for i in 0..CAPACITY + 5 {
            a.record("model.load", format!("m{i}"), String::new(), "ok".into());
        }
        let p = a.page(0, 3);
        let e = p["entries"].as_array().expect("entries");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0]["target"], format!("m{}", CAPACITY + 4));
        assert_eq!(e[0]["who"], "anonymous");
        let next = p["next_before"].as_u64().expect("more");
        let p2 = a.page(next, CAPACITY * 2);
        let e2 = p2["entries"].as_array().expect("entries");
        assert_eq!(e2.len(), CAPACITY - 3, "the oldest five were dropped");
        assert_eq!(e2[0]["target"], format!("m{}", CAPACITY + 1));
        assert!(p2["next_before"].is_null());
    }
}
