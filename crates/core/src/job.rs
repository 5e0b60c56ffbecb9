//! The job lifecycle: states and the transitions between them.
//!
//! `queued → assigned → preparing → running → succeeded | failed | stopped | lost`,
//! and `lost → queued` when the retry policy allows another attempt. Only the
//! server changes a job's state, and only through [`JobState::transition`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, invalid};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Assigned,
    Preparing,
    Running,
    Succeeded,
    Failed,
    Stopped,
    Lost,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Assigned,
        JobState::Preparing,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Stopped,
        JobState::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Assigned => "assigned",
            JobState::Preparing => "preparing",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Stopped => "stopped",
            JobState::Lost => "lost",
        }
    }

    /// No further change will happen (a lost job may still be requeued by
    /// its retry policy, which the server decides at the moment it is lost).
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Stopped | JobState::Lost)
    }

    /// An agent holds a lease on the job.
    pub fn is_leased(self) -> bool {
        matches!(self, JobState::Assigned | JobState::Preparing | JobState::Running)
    }

    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Queued, Assigned)
                | (Queued, Stopped)
                | (Assigned, Preparing)
                | (Assigned, Running)
                | (Preparing, Running)
                | (Assigned | Preparing | Running, Succeeded | Failed | Stopped | Lost)
                | (Lost, Queued)
        )
    }

    /// The checked transition: the new state, or an error naming both.
    pub fn transition(self, to: JobState) -> Result<JobState, Error> {
        if self.can_become(to) { Ok(to) } else { Err(Error::Transition { from: self.to_string(), to: to.to_string() }) }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| invalid(format!("unknown job state '{s}'")))
    }
}

/// How an agent says a job ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The command exited 0.
    Succeeded,
    /// The command exited non-zero, was killed by its timeout, or the job
    /// could not be prepared.
    Failed,
    /// A user asked to stop it.
    Stopped,
}

impl Outcome {
    pub fn state(self) -> JobState {
        match self {
            Outcome::Succeeded => JobState::Succeeded,
            Outcome::Failed => JobState::Failed,
            Outcome::Stopped => JobState::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn lifecycle() {
        assert_eq!(Queued.transition(Assigned).unwrap(), Assigned);
        assert!(Running.can_become(Lost));
        assert!(Lost.can_become(Queued));
        assert!(Queued.can_become(Stopped));
        for from in [Succeeded, Failed, Stopped] {
            for to in JobState::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
        assert!(Queued.transition(Running).is_err());
        assert!(Running.transition(Queued).is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
    }
}
