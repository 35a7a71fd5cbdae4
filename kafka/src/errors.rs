//! Log errors and refused checks as the Kafka error codes clients act on.

use kafka_protocol::ResponseError;
use weir_log::LogError;
use weir_tenancy::CheckError;

/// The Kafka error code for a log error.
pub fn code(error: &LogError) -> ResponseError {
    use LogError as E;
    match error {
        E::UnknownTopic(_) | E::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        E::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        E::InvalidConfig { .. } => ResponseError::InvalidConfig,
        E::TopicExists(_) => ResponseError::TopicAlreadyExists,
        E::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        E::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        E::InvalidBatch(_) => ResponseError::CorruptMessage,
        E::MissingKey { .. } => ResponseError::InvalidRecord,
        E::ProducerFenced(_) => ResponseError::InvalidProducerEpoch,
        E::OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
        E::DuplicateSequence(_) => ResponseError::DuplicateSequenceNumber,
        E::Unavailable(_) => ResponseError::KafkaStorageError,
        E::CommitLog { .. } | E::UnknownCommitLog(_) => ResponseError::UnknownServerError,
    }
}

/// A refused quota check as the Kafka error code and message a client sees.
pub fn check_refusal(error: CheckError) -> (ResponseError, String) {
    match error {
        CheckError::OverQuota(over) => (ResponseError::PolicyViolation, over.message),
        CheckError::Log(e) => (code(&e), e.to_string()),
    }
}
