//! The rollouts of an [`Agent`] as its admin socket gives them (what
//! `traffic-shift rollout status` shows), and the wait on them.

use std::time::{Duration, Instant};

use traffic_shift_agent::{
    admin::{self, Request, Response},
    rollout::{Phase, RolloutStatus},
};

use crate::Agent;

/// A Rollout of tcp-echo's `tcp[0]`, v1 to v2 (the tcp-echo rules), with
/// `steps` (YAML, each line indented by two spaces).
pub fn tcp_echo_rollout(steps: &str) -> String {
    format!(
        "apiVersion: rollouts.traffic-shift.io/v1alpha1
kind: Rollout
metadata:
  name: tcp-echo
spec:
  target:
    virtualService: tcp-echo
    route: tcp[0]
    stable: v1
    canary: v2
  steps:
{steps}"
    )
}

/// The weights a rollout put in force, in order: `(step, canary %)`.
pub fn weights(status: &RolloutStatus) -> Vec<(Option<usize>, u32)> {
    status
        .weights
        .iter()
        .map(|w| (w.step, w.canary_weight))
        .collect()
}

impl Agent {
    /// The rollout `name` (`NAMESPACE/NAME`) as it stands, if the agent has
    /// it.
    pub fn rollout(&self, name: &str) -> Option<RolloutStatus> {
        let request = Request::Rollouts { name: None };
        match admin::call(&self.admin_socket, &request) {
            Ok(Response::Rollouts { rollouts }) => rollouts.into_iter().find(|r| r.name == name),
            other => panic!("rollouts: {other:?}\nagent log:\n{}", self.log_text()),
        }
    }

    /// Polls the rollout (every 20 ms, up to `timeout`) until `ready`.
    pub fn wait_rollout(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&RolloutStatus) -> bool,
    ) -> RolloutStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.rollout(name);
            if let Some(status) = status.as_ref().filter(|s| ready(s)) {
                return status.clone();
            }
            assert!(
                Instant::now() < deadline,
                "rollout {name} never {what} within {timeout:?}: {status:#?}\nagent log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the rollout has `canary` percent in force (and is
    /// Progressing or Paused).
    pub fn wait_canary(&self, name: &str, canary: u32, timeout: Duration) -> RolloutStatus {
        self.wait_rollout(
            name,
            &format!("put {canary}% on the canary"),
            timeout,
            |s| {
                s.canary_in_force == Some(canary)
                    && matches!(s.phase, Phase::Progressing | Phase::Paused | Phase::Healthy)
            },
        )
    }
}
