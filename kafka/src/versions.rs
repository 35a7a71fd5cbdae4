//! The APIs and versions Weir speaks, advertised exactly in ApiVersions.
//!
//! The ranges start where RecordBatch v2 (the log's own format) begins and
//! end before features Weir does not have yet (topic ids in fetches,
//! tiered-storage offsets), so every advertised version is fully served.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

/// `(api, lowest, highest)` version spoken.
const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
];

/// Whether `version` of `api` is spoken.
pub fn supported(api: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|&(key, min, max)| key == api && (min..=max).contains(&version))
}

/// The ApiVersions answer.
pub fn supported_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        SUPPORTED
            .iter()
            .map(|&(key, min, max)| {
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect(),
    )
}

/// The answer to an ApiVersions request of a version not spoken: the
/// error and the versions that are, so the client can retry with one.
pub fn unsupported() -> kafka_protocol::messages::ResponseKind {
    kafka_protocol::messages::ResponseKind::ApiVersions(
        supported_versions().with_error_code(ResponseError::UnsupportedVersion.code()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_version_is_one_the_codec_knows() {
        for &(key, min, max) in SUPPORTED {
            let known = key.valid_versions();
            assert!(
                known.min <= min && max <= known.max && min <= max,
                "{key:?} {min}..={max} is outside {known}"
            );
        }
        assert!(supported(ApiKey::ApiVersions, 0));
        assert!(!supported(ApiKey::Produce, 2));
        assert!(!supported(ApiKey::DeleteRecords, 0));
    }
}
