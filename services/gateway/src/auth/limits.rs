//! Per-caller rate limits by tier, by the generic cell rate algorithm
//! (`governor`): calls, and embedding inputs; and per-caller concurrency
//! (calls in flight, a stream counting for its whole life). State is per
//! gateway replica.

use std::{
    collections::BTreeMap,
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use governor::{
    Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

use super::{AuthError, Caller};
use crate::settings::Tier;

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Callers remembered before idle ones are dropped (JWT subjects are not
/// bounded by the settings).
const MAX_TRACKED: usize = 100_000;

struct TierLimits {
    requests: Option<(Keyed, u32)>,
    inputs: Option<(Keyed, u32)>,
    /// Calls in flight per caller; 0: no limit.
    concurrent: u32,
}

/// Where a caller stands after an admitted call.
#[derive(Clone, Copy, Debug)]
pub struct Standing {
    /// The burst size of the tier.
    pub limit: u32,
    pub remaining: u32,
}

/// The limiters of every tier.
pub struct Limits {
    tiers: HashMap<String, TierLimits>,
    clock: DefaultClock,
    /// Each caller's in-flight slots; an entry lives while a slot is held.
    in_flight: Mutex<HashMap<String, Weak<Semaphore>>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("tiers", &self.tiers.keys())
            .finish()
    }
}

fn quota(key: &str, per_second: f64, burst: u32) -> Result<Option<(Keyed, u32)>, (String, String)> {
    if per_second == 0.0 {
        return Ok(None);
    }
    if !(per_second.is_finite() && per_second > 0.0) {
        return Err((
            key.to_owned(),
            "must be a positive number (0: no limit)".into(),
        ));
    }
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let q = Quota::with_period(Duration::from_secs_f64(1.0 / per_second))
        .ok_or_else(|| (key.to_owned(), "too high".to_owned()))?
        .allow_burst(burst);
    Ok(Some((
        RateLimiter::keyed(q).with_middleware::<StateInformationMiddleware>(),
        burst.get(),
    )))
}

impl Limits {
    pub fn new(tiers: &BTreeMap<String, Tier>) -> Result<Self, (String, String)> {
        let mut out = HashMap::new();
        for (name, t) in tiers {
            out.insert(
                name.clone(),
                TierLimits {
                    requests: quota(
                        &format!("auth.tiers.{name}.requests_per_second"),
                        t.requests_per_second,
                        t.burst,
                    )?,
                    inputs: quota(
                        &format!("auth.tiers.{name}.inputs_per_second"),
                        t.inputs_per_second,
                        t.inputs_burst,
                    )?,
                    concurrent: t.max_concurrent,
                },
            );
        }
        Ok(Self {
            tiers: out,
            clock: DefaultClock::default(),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// One in-flight slot of `c`, held until the returned permit drops
    /// (the auth layer keeps it with the response body, so a stream holds
    /// it to its end); refused when the caller's tier allows no more.
    pub fn hold(&self, c: &Caller) -> Result<Option<OwnedSemaphorePermit>, AuthError> {
        let cap = self.tier(c).map_or(0, |t| t.concurrent);
        if cap == 0 {
            return Ok(None);
        }
        let slots = {
            let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() > 1024 {
                m.retain(|_, w| w.strong_count() > 0);
            }
            match m.get(&c.name).and_then(Weak::upgrade) {
                Some(s) => s,
                None => {
                    let s = Arc::new(Semaphore::new(cap as usize));
                    m.insert(c.name.clone(), Arc::downgrade(&s));
                    s
                }
            }
        };
        slots.try_acquire_owned().map(Some).map_err(|_| {
            self.refused(
                c,
                "concurrent calls (auth.tiers.<tier>.max_concurrent)",
                cap,
                Duration::from_secs(1),
            )
        })
    }

    /// A caller's tier; an unknown one (a JWT's claim) gets `default`.
    fn tier(&self, c: &Caller) -> Option<&TierLimits> {
        self.tiers
            .get(&c.tier)
            .or_else(|| self.tiers.get("default"))
    }

    fn refused(&self, c: &Caller, what: &'static str, limit: u32, wait: Duration) -> AuthError {
        AuthError::RateLimited {
            caller: c.name.clone(),
            tier: c.tier.clone(),
            what,
            retry_after: wait,
            limit,
        }
    }

    /// Counts one call of `c`.
    pub fn admit(&self, c: &Caller) -> Result<Option<Standing>, AuthError> {
        let Some((l, limit)) = self.tier(c).and_then(|t| t.requests.as_ref()) else {
            return Ok(None);
        };
        if l.len() > MAX_TRACKED {
            l.retain_recent();
        }
        match l.check_key(&c.name) {
            Ok(s) => Ok(Some(Standing {
                limit: *limit,
                remaining: s.remaining_burst_capacity(),
            })),
            Err(not) => Err(self.refused(c, "calls", *limit, not.wait_time_from(self.clock.now()))),
        }
    }

    /// Counts `n` embedding inputs of `c`.
    pub fn charge_inputs(&self, c: &Caller, n: usize) -> Result<(), AuthError> {
        let Some((l, limit)) = self.tier(c).and_then(|t| t.inputs.as_ref()) else {
            return Ok(());
        };
        let Some(n) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return Ok(());
        };
        match l.check_key_n(&c.name, n) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(not)) => Err(self.refused(
                c,
                "embedding inputs",
                *limit,
                not.wait_time_from(self.clock.now()),
            )),
            // More inputs in one call than the burst can ever hold.
            Err(_) => Err(self.refused(
                c,
                "embedding inputs: one call larger than the tier's inputs_burst",
                *limit,
                Duration::ZERO,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;

    #[test]
    fn a_burst_beyond_the_tier_is_refused_with_a_wait() {
        let tiers = BTreeMap::from([(
            "t".to_owned(),
            Tier {
                requests_per_second: 1.0,
                burst: 3,
                inputs_per_second: 10.0,
                inputs_burst: 20,
                max_concurrent: 2,
            },
        )]);
        let l = Limits::new(&tiers).expect("valid");
        let c = Caller {
            name: "a".into(),
            label: "a".into(),
            tier: "t".into(),
            scopes: vec![Scope::Embed],
        };
        for left in [2, 1, 0] {
            assert_eq!(
                l.admit(&c)
                    .expect("within burst")
                    .expect("limited")
                    .remaining,
                left
            );
        }
        let Err(AuthError::RateLimited { retry_after, .. }) = l.admit(&c) else {
            panic!("the fourth call is over the limit")
        };
        assert!(retry_after > Duration::from_millis(500) && retry_after <= Duration::from_secs(1));
        // Another caller of the same tier has its own allowance.
        let d = Caller {
            name: "b".into(),
            ..c.clone()
        };
        assert!(l.admit(&d).is_ok());
        assert!(l.charge_inputs(&c, 20).is_ok());
        assert!(l.charge_inputs(&c, 5).is_err());
        assert!(l.charge_inputs(&c, 50).is_err(), "larger than the burst");
        // Two calls in flight at most; the other caller is unaffected.
        let one = l.hold(&c).expect("first").expect("limited");
        let two = l.hold(&c).expect("second");
        assert!(l.hold(&c).is_err(), "a third at once");
        assert!(l.hold(&d).is_ok(), "another caller has its own slots");
        drop(one);
        assert!(l.hold(&c).is_ok(), "a slot came back");
        drop(two);
    }
}
