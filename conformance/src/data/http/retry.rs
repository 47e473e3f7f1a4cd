//! Retry decisions as Envoy's router makes them: which outcome of a try the policy's
//! `retry_on` retries, the fully jittered backoff, and the retry budget's arithmetic.

use std::time::Duration;

use rand::Rng;

use crate::config::cluster::RetryBudget;
use crate::config::route::{Backoff, RetryPolicy};

/// How one try ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// The upstream answered with this status and a `grpc-status` in its headers (a
    /// trailers-only gRPC answer).
    Grpc(u16, u32),
    /// No connection could be made.
    ConnectFailure,
    /// The connection or stream was reset before the request was sent.
    ResetBeforeRequest,
    /// The HTTP/2 stream was refused (`REFUSED_STREAM`).
    RefusedStream,
    /// The connection or stream was reset (or closed) after the request was sent.
    Reset,
    /// The per-try timeout expired.
    PerTryTimeout,
}

/// Whether `policy` retries a try that ended with `outcome`.
pub(crate) fn retriable(policy: &RetryPolicy, outcome: Outcome) -> bool {
    let on = &policy.on;
    let any_reset = on.five_xx || on.gateway_error || on.reset;
    match outcome {
        Outcome::Status(s) => status_retriable(policy, s),
        Outcome::Grpc(s, g) => {
            let grpc = &on.grpc;
            status_retriable(policy, s)
                || match g {
                    1 => grpc.cancelled,
                    4 => grpc.deadline_exceeded,
                    8 => grpc.resource_exhausted,
                    13 => grpc.internal,
                    14 => grpc.unavailable,
                    _ => false,
                }
        }
        Outcome::ConnectFailure => any_reset || on.connect_failure || on.reset_before_request,
        Outcome::ResetBeforeRequest => any_reset || on.reset_before_request,
        Outcome::RefusedStream => any_reset || on.refused_stream || on.reset_before_request,
        Outcome::Reset => any_reset,
        // Envoy counts a per-try timeout as a 504: for `5xx`, `gateway-error`, and
        // `retriable-status-codes` that list 504 (Gateway API's `retry.codes: [504]`).
        Outcome::PerTryTimeout => status_retriable(policy, 504),
    }
}

/// Whether `policy` retries an answer with status `s`.
fn status_retriable(policy: &RetryPolicy, s: u16) -> bool {
    let on = &policy.on;
    (on.five_xx && (500..600).contains(&s))
        || (on.gateway_error && matches!(s, 502..=504))
        || (on.retriable_4xx && s == 409)
        || (on.retriable_status_codes && policy.retriable_status_codes.contains(&s))
}

/// The wait before retry number `n` (0 for the first retry): uniform in
/// `[0, min(base * 2^n, max)]`, fully jittered as Envoy's backoff.
pub(crate) fn backoff(b: &Backoff, n: u32) -> Duration {
    let cap = backoff_cap(b, n);
    let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// The upper bound of the wait before retry number `n`.
pub(crate) fn backoff_cap(b: &Backoff, n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    b.base.saturating_mul(factor).min(b.max.max(b.base))
}

/// How many retries may be active at once on a cluster with `active_requests`
/// requests in flight: Envoy's budget takes `percent` of the active requests (retries
/// among them), and at least `min_concurrency`.
pub(crate) fn budget_limit(budget: &RetryBudget, active_requests: u64) -> u64 {
    let share = (budget.percent / 100.0 * active_requests as f64).floor();
    let share = if share.is_finite() && share > 0.0 {
        share as u64
    } else {
        0
    };
    share.max(u64::from(budget.min_concurrency))
}

/// The limit without a budget: Envoy's default `max_retries` circuit breaker of 3.
pub(crate) const DEFAULT_MAX_RETRIES: u64 = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::route::RetryOn;

    fn policy(on: RetryOn) -> RetryPolicy {
        RetryPolicy {
            on,
            num_retries: 2,
            per_try_timeout: None,
            backoff: Backoff::default(),
            retriable_status_codes: vec![409],
        }
    }

    #[test]
    fn conditions_are_envoys() {
        let five = policy(RetryOn {
            five_xx: true,
            ..Default::default()
        });
        assert!(retriable(&five, Outcome::Status(500)));
        assert!(retriable(&five, Outcome::Status(503)));
        assert!(!retriable(&five, Outcome::Status(404)));
        assert!(retriable(&five, Outcome::Reset));
        assert!(retriable(&five, Outcome::ConnectFailure));
        assert!(retriable(&five, Outcome::PerTryTimeout));

        let gw = policy(RetryOn {
            gateway_error: true,
            ..Default::default()
        });
        assert!(!retriable(&gw, Outcome::Status(500)));
        assert!(retriable(&gw, Outcome::Status(502)));
        assert!(retriable(&gw, Outcome::Status(504)));
        assert!(retriable(&gw, Outcome::ConnectFailure));

        let early = policy(RetryOn {
            connect_failure: true,
            refused_stream: true,
            reset_before_request: true,
            ..Default::default()
        });
        assert!(retriable(&early, Outcome::ConnectFailure));
        assert!(retriable(&early, Outcome::RefusedStream));
        assert!(retriable(&early, Outcome::ResetBeforeRequest));
        assert!(!retriable(&early, Outcome::Reset));
        assert!(!retriable(&early, Outcome::Status(503)));
        assert!(!retriable(&early, Outcome::PerTryTimeout));

        let codes = policy(RetryOn {
            retriable_status_codes: true,
            ..Default::default()
        });
        assert!(retriable(&codes, Outcome::Status(409)));
        assert!(!retriable(&codes, Outcome::Status(500)));
        assert!(
            !retriable(&codes, Outcome::PerTryTimeout),
            "504 is not listed"
        );
        let mut timeouts = policy(RetryOn {
            retriable_status_codes: true,
            ..Default::default()
        });
        timeouts.retriable_status_codes = vec![504];
        assert!(retriable(&timeouts, Outcome::PerTryTimeout), "as a 504");
        let none = policy(RetryOn::default());
        assert!(!retriable(&none, Outcome::Status(503)));
        assert!(!retriable(&none, Outcome::ConnectFailure));
    }

    #[test]
    fn conflicts_and_grpc_statuses_retry_only_when_named() {
        use crate::config::route::GrpcRetryOn;
        let four = policy(RetryOn {
            retriable_4xx: true,
            ..Default::default()
        });
        assert!(retriable(&four, Outcome::Status(409)));
        assert!(!retriable(&four, Outcome::Status(404)));
        let grpc = policy(RetryOn {
            grpc: GrpcRetryOn {
                unavailable: true,
                deadline_exceeded: true,
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(retriable(&grpc, Outcome::Grpc(200, 14)));
        assert!(retriable(&grpc, Outcome::Grpc(200, 4)));
        assert!(!retriable(&grpc, Outcome::Grpc(200, 13)));
        assert!(!retriable(&grpc, Outcome::Grpc(200, 0)));
        assert!(!retriable(&grpc, Outcome::Status(503)));
    }

    #[test]
    fn backoff_is_jittered_below_the_doubling_cap() {
        let b = Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_millis(100),
        };
        assert_eq!(backoff_cap(&b, 0), Duration::from_millis(25));
        assert_eq!(backoff_cap(&b, 1), Duration::from_millis(50));
        assert_eq!(backoff_cap(&b, 2), Duration::from_millis(100));
        assert_eq!(backoff_cap(&b, 40), Duration::from_millis(100));
        for n in 0..5 {
            for _ in 0..200 {
                assert!(backoff(&b, n) <= backoff_cap(&b, n));
            }
        }
        let spread: std::collections::BTreeSet<_> = (0..200).map(|_| backoff(&b, 2)).collect();
        assert!(spread.len() > 10, "the wait is jittered: {spread:?}");
    }

    #[test]
    fn budget_is_a_share_of_active_requests_with_a_floor() {
        let b = RetryBudget {
            percent: 20.0,
            min_concurrency: 3,
        };
        assert_eq!(budget_limit(&b, 0), 3);
        assert_eq!(budget_limit(&b, 10), 3);
        assert_eq!(budget_limit(&b, 20), 4);
        assert_eq!(budget_limit(&b, 100), 20);
        let zero = RetryBudget {
            percent: 0.0,
            min_concurrency: 1,
        };
        assert_eq!(budget_limit(&zero, 1000), 1);
    }
}
