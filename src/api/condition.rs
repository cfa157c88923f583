//! Status conditions following the Kubernetes API conventions: `type`, `status`, `reason`
//! (a CamelCase constant), `message`, `lastTransitionTime` and `observedGeneration`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The three values of a condition's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// Merges a condition into `conditions`. `lastTransitionTime` moves only when the status
/// flips, so watchers can tell how long a resource has been in its current state.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status.as_str() {
                existing.last_transition_time = Time(now);
            }
            existing.status = status.as_str().to_string();
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.as_str().to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: Time(now),
            observed_generation,
        }),
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::False,
            "Invalid",
            "a",
            Some(1),
            ts(10),
        );
        set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::False,
            "Invalid",
            "b",
            Some(2),
            ts(20),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, Time(ts(10)));
        assert_eq!(conds[0].message, "b");
        assert_eq!(conds[0].observed_generation, Some(2));
        set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::True,
            "Valid",
            "",
            Some(3),
            ts(30),
        );
        assert_eq!(conds[0].last_transition_time, Time(ts(30)));
        assert_eq!(conds[0].status, "True");
    }
}
