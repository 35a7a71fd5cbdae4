//! [`TaskError`]: why a task stopped, other than by being asked to.

use weir_host::OperatorError;
use weir_log::{LogError, MAX_COMMIT_BYTES};

use crate::chain::Halt;

/// Why a task stopped. Its message is what the pipeline's status shows.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Stopped in the middle of a round: not a failure. Nothing of the
    /// round was committed, and the next start redoes it.
    #[error("interrupted: the task is stopping")]
    Interrupted,
    /// The log refused or failed what the task was `doing`.
    #[error("{doing}: {source}")]
    Log {
        doing: String,
        #[source]
        source: LogError,
    },
    #[error("input {input} has no partition {partition}")]
    NoPartition { input: String, partition: u32 },
    /// The commit log holds what this build cannot recover from.
    #[error("{0}")]
    Recovery(String),
    #[error("starting stage {stage}: {source}")]
    StageStart {
        stage: String,
        #[source]
        source: OperatorError,
    },
    /// A stage failed under the `halt` policy.
    #[error("stage {stage}: {reason}")]
    Halted { stage: String, reason: String },
    /// Under `halt`, an output no topic can take.
    #[error("an output cannot be delivered: {0}")]
    Undeliverable(String),
    #[error(
        "the round for offsets up to {end} would commit {size} bytes of outputs and state, \
         more than the {MAX_COMMIT_BYTES} bytes a commit holds (lower the stages' output or \
         state limits, or use fewer stages)"
    )]
    CommitTooLarge { end: u64, size: usize },
    /// A part of the task panicked.
    #[error("{0}")]
    Crashed(String),
    /// The committer ended (on its own failure, reported instead).
    #[error("the committer stopped")]
    CommitterGone,
}

impl TaskError {
    /// Whether the failure may pass by itself: the log was unavailable
    /// (nothing was half done; it may be back later). On a cluster this includes a topic the log did not
    /// know (a server that just restarted may not know a stream yet) and a
    /// commit the commit log refused or failed (out of reach, or fenced
    /// because another worker wrote: a restart reads the commits again).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TaskError::Log {
                source: LogError::Unavailable(_)
                    | LogError::UnknownTopic(_)
                    | LogError::CommitLog { .. },
                ..
            }
        )
    }

    /// Wraps a log error met while `doing` something.
    pub fn log(doing: impl Into<String>) -> impl FnOnce(LogError) -> TaskError {
        let doing = doing.into();
        move |source| TaskError::Log { doing, source }
    }
}

impl From<Halt> for TaskError {
    fn from(halt: Halt) -> TaskError {
        match halt {
            Halt::Interrupted => TaskError::Interrupted,
            Halt::Failed { stage, reason } => TaskError::Halted { stage, reason },
        }
    }
}
