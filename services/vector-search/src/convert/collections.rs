//! Collections: names, creation settings, metadata and the info answered.

use mlmesh_proto::vector::v1 as pb;

use super::{MAX_EF, Result};
use crate::{
    error::VectorError,
    model::{CollectionConfig, Distance, Hnsw, Quantization, TextIndex},
    settings::{MAX_DIMENSION, VectorSettings},
};

/// Only `[A-Za-z0-9_-]`.
fn name_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a collection name: 1–64 characters from `[A-Za-z0-9_-]`.
pub fn collection_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(VectorError::Empty {
            field: field.into(),
            hint: "a collection name is required",
        });
    }
    if name.len() > 64 || !name_chars(name) {
        return Err(VectorError::invalid(
            field,
            format!("{name:?} must be 1 to 64 characters from [A-Za-z0-9_-]"),
        ));
    }
    Ok(())
}

pub fn collection_config(
    r: &pb::CreateCollectionRequest,
    defaults: &VectorSettings,
) -> Result<CollectionConfig> {
    collection_name("name", &r.name)?;
    let dimension = r.dimension as usize;
    if dimension == 0 || dimension > MAX_DIMENSION {
        return Err(VectorError::invalid(
            "dimension",
            format!("{dimension} is outside 1..={MAX_DIMENSION}"),
        ));
    }
    let distance = match pb::Distance::try_from(r.distance) {
        Ok(pb::Distance::Cosine) => Distance::Cosine,
        Ok(pb::Distance::Dot) => Distance::Dot,
        Ok(pb::Distance::Euclid) => Distance::Euclid,
        Ok(pb::Distance::Unspecified) | Err(_) => {
            return Err(VectorError::invalid(
                "distance",
                format!("{} is not one of COSINE, DOT, EUCLID", r.distance),
            ));
        }
    };
    let hnsw = r.hnsw.unwrap_or_default();
    let m = match hnsw.m as usize {
        0 => defaults.hnsw_m,
        m if (2..=128).contains(&m) => m,
        m => {
            return Err(VectorError::invalid(
                "hnsw.m",
                format!("{m} is outside 2..=128"),
            ));
        }
    };
    let ef_construct = match hnsw.ef_construct as usize {
        0 => defaults.hnsw_ef_construct,
        e if (4..=MAX_EF).contains(&e) => e,
        e => {
            return Err(VectorError::invalid(
                "hnsw.ef_construct",
                format!("{e} is outside 4..={MAX_EF}"),
            ));
        }
    };
    let quantization = match pb::Quantization::try_from(r.quantization) {
        Ok(pb::Quantization::Unspecified) => defaults.quantization,
        Ok(pb::Quantization::None) => Quantization::None,
        Ok(pb::Quantization::Int8) => Quantization::Int8,
        Err(_) => {
            return Err(VectorError::invalid(
                "quantization",
                format!(
                    "{} is not one of QUANTIZATION_UNSPECIFIED, QUANTIZATION_NONE, QUANTIZATION_INT8",
                    r.quantization
                ),
            ));
        }
    };
    let text_index = text_index_in("text_index", r.text_index, defaults.text_index)?;
    Ok(CollectionConfig {
        dimension,
        distance,
        hnsw: Hnsw { m, ef_construct },
        quantization,
        text_index,
    })
}

/// A `TextIndex` field; UNSPECIFIED takes `default`.
fn text_index_in(field: &str, value: i32, default: TextIndex) -> Result<TextIndex> {
    match pb::TextIndex::try_from(value) {
        Ok(pb::TextIndex::Unspecified) => Ok(default),
        Ok(pb::TextIndex::None) => Ok(TextIndex::None),
        Ok(pb::TextIndex::Bm25) => Ok(TextIndex::Bm25),
        Ok(pb::TextIndex::Sparse) => Ok(TextIndex::Sparse),
        Err(_) => Err(VectorError::invalid(
            field,
            format!(
                "{value} is not one of TEXT_INDEX_UNSPECIFIED, TEXT_INDEX_NONE, TEXT_INDEX_BM25, TEXT_INDEX_SPARSE"
            ),
        )),
    }
}

/// Longest payload key `text_from_payload` may name.
pub const MAX_TEXT_KEY_BYTES: usize = 64;

/// An AddTextIndex request, validated: the index to add and the payload key
/// to fill it from, if any.
pub fn add_text_index(
    r: &pb::AddTextIndexRequest,
    defaults: &VectorSettings,
) -> Result<(TextIndex, Option<String>)> {
    collection_name("collection", &r.collection)?;
    let index = match text_index_in("text_index", r.text_index, defaults.text_index)? {
        TextIndex::None => {
            return Err(VectorError::invalid(
                "text_index",
                "TEXT_INDEX_NONE adds nothing: ask for TEXT_INDEX_BM25 or TEXT_INDEX_SPARSE",
            ));
        }
        // The service default may be NONE.
        t => t,
    };
    let key = &r.text_from_payload;
    if key.is_empty() {
        return Ok((index, None));
    }
    if index != TextIndex::Bm25 {
        return Err(VectorError::invalid(
            "text_from_payload",
            "only a BM25 index computes sparse vectors from text; a SPARSE index takes the client's vectors",
        ));
    }
    if key.len() > MAX_TEXT_KEY_BYTES || !name_chars(key) {
        return Err(VectorError::invalid(
            "text_from_payload",
            format!(
                "{key:?} must be a top-level payload key of 1 to {MAX_TEXT_KEY_BYTES} characters from [A-Za-z0-9_-]"
            ),
        ));
    }
    Ok((index, Some(key.clone())))
}

pub fn text_index_out(t: TextIndex) -> pb::TextIndex {
    match t {
        TextIndex::None => pb::TextIndex::None,
        TextIndex::Bm25 => pb::TextIndex::Bm25,
        TextIndex::Sparse => pb::TextIndex::Sparse,
    }
}

/// Most metadata entries per collection, and the size of each key / value.
pub const MAX_METADATA_ENTRIES: usize = 32;
pub const MAX_METADATA_KEY_BYTES: usize = 64;
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;

pub fn metadata(m: &std::collections::HashMap<String, String>) -> Result<crate::model::Metadata> {
    if m.len() > MAX_METADATA_ENTRIES {
        return Err(VectorError::invalid(
            "metadata",
            format!("{} entries; the limit is {MAX_METADATA_ENTRIES}", m.len()),
        ));
    }
    for (k, v) in m {
        if k.is_empty() || k.len() > MAX_METADATA_KEY_BYTES {
            return Err(VectorError::invalid(
                "metadata",
                format!("key {k:?} must be 1 to {MAX_METADATA_KEY_BYTES} bytes"),
            ));
        }
        if v.len() > MAX_METADATA_VALUE_BYTES {
            return Err(VectorError::invalid(
                format!("metadata[{k:?}]"),
                format!("{} bytes; the limit is {MAX_METADATA_VALUE_BYTES}", v.len()),
            ));
        }
    }
    Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

pub fn collection_info(info: crate::model::CollectionInfo) -> pb::CollectionInfo {
    use crate::model::IndexStatus;
    let distance = match info.config.distance {
        Distance::Cosine => pb::Distance::Cosine,
        Distance::Dot => pb::Distance::Dot,
        Distance::Euclid => pb::Distance::Euclid,
    };
    let status = match info.status {
        IndexStatus::Ready => pb::IndexStatus::Ready,
        IndexStatus::Pending => pb::IndexStatus::Pending,
        IndexStatus::Optimizing => pb::IndexStatus::Optimizing,
    };
    pb::CollectionInfo {
        name: info.name,
        dimension: info.config.dimension as u32,
        distance: distance.into(),
        hnsw: Some(pb::HnswConfig {
            m: info.config.hnsw.m as u32,
            ef_construct: info.config.hnsw.ef_construct as u32,
        }),
        points_count: info.points_count,
        indexed_vectors_count: info.indexed_vectors_count,
        segments_count: info.segments_count,
        status: status.into(),
        metadata: info.metadata.into_iter().collect(),
        quantization: match info.config.quantization {
            Quantization::None => pb::Quantization::None,
            Quantization::Int8 => pb::Quantization::Int8,
        }
        .into(),
        text_index: text_index_out(info.config.text_index).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_limits_name_the_field() {
        let ok: std::collections::HashMap<String, String> = [("model".into(), "m".into())].into();
        assert_eq!(metadata(&ok).expect("valid").len(), 1);
        let many = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        let e = metadata(&many).expect_err("too many").to_string();
        assert!(e.contains("metadata") && e.contains("32"), "{e}");
        let big = [("k".into(), "x".repeat(MAX_METADATA_VALUE_BYTES + 1))].into();
        let e = metadata(&big).expect_err("too big").to_string();
        assert!(e.contains("metadata[\"k\"]") && e.contains("1024"), "{e}");
        let empty_key = [(String::new(), "v".into())].into();
        assert!(metadata(&empty_key).is_err());
    }
}
