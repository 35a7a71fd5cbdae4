//! Log errors as the Kafka error codes clients act on.

use kafka_protocol::ResponseError;
use log_core::LogError;

/// The Kafka error code for a log error.
pub fn code(error: &LogError) -> ResponseError {
    use LogError as E;
    match error {
        E::UnknownTopic(_) | E::TopicDeleted(_) | E::UnknownPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        E::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        E::InvalidConfig { .. } => ResponseError::InvalidConfig,
        E::TopicExists(_) => ResponseError::TopicAlreadyExists,
        E::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        E::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        E::InvalidBatch(_) => ResponseError::CorruptMessage,
        E::MissingKey { .. } => ResponseError::InvalidRecord,
        E::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
        E::OutOfOrderSequence { .. } | E::InvalidSequence { .. } => {
            ResponseError::OutOfOrderSequenceNumber
        }
        E::DuplicateSequence { .. } => ResponseError::DuplicateSequenceNumber,
        E::PartitionFailed { .. } | E::Io { .. } | E::Corrupt { .. } => {
            ResponseError::KafkaStorageError
        }
        _ => ResponseError::UnknownServerError,
    }
}
