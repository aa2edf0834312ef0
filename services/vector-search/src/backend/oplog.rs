//! The embedded backend's operation log: every write is appended here before
//! it is applied to the engine and acknowledged, and replayed at start.
//!
//! Why our own log: `qdrant-edge` 0.7.2 writes a WAL but never replays it
//! when a shard is loaded, and its segments keep part of their state (the id
//! mapping, payload bookkeeping) in memory until `flush`. A `kill -9` between
//! flushes would lose acknowledged points. Flushing after every write would
//! cost several fsyncs per call; instead, an acknowledged write is in this
//! log (in the OS page cache, which outlives the process; fsynced too when
//! `vector.sync_writes` is on), and a periodic checkpoint flushes the engine
//! and empties the log.
//!
//! Replay is idempotent: records are per point id (deletes by filter are
//! logged as the ids they resolved to), and a point's final state is the last
//! record naming it, whatever state the engine files were left in.
//!
//! Frame: `len: u32 LE | crc32(body): u32 LE | body`. A torn or corrupt
//! frame ends the log; it is cut off at open. Upserts whose points carry
//! sparse vectors are a kind of their own, so logs without any stay
//! readable by earlier versions.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

use uuid::Uuid;

use crate::model::{Payload, Point, PointId, SparseVector};

/// One logged write.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Upsert(Vec<Point>),
    Delete(Vec<PointId>),
}

const KIND_UPSERT: u8 = 1;
const KIND_DELETE: u8 = 2;
/// An upsert with, per point, a sparse vector flag (and vector) after the
/// payload.
const KIND_UPSERT_SPARSE: u8 = 3;
const HEADER: usize = 8;

/// An append-only log file.
#[derive(Debug)]
pub struct OpLog {
    file: File,
    path: PathBuf,
    len: u64,
    sync: bool,
}

impl OpLog {
    /// Opens (or creates) the log at `path`, returns it with the operations
    /// it holds, and cuts off a torn tail.
    pub fn open(path: &Path, sync: bool) -> io::Result<(Self, Vec<Op>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (ops, valid) = decode_all(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                kept = valid,
                dropped = bytes.len() - valid,
                "operation log ends in a torn or corrupt record (a write interrupted by a crash, never acknowledged); cutting it off"
            );
            file.set_len(valid as u64)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::Start(valid as u64))?;
        Ok((
            Self {
                file,
                path: path.to_owned(),
                len: valid as u64,
                sync,
            },
            ops,
        ))
    }

    /// Appends one operation. On error the log is left as it was.
    pub fn append(&mut self, op: &Op) -> io::Result<()> {
        let frame = encode_frame(op)?;
        if let Err(e) = self.write_frame(&frame) {
            // Never leave a partial frame in front of later records.
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(e);
        }
        self.len += frame.len() as u64;
        Ok(())
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.file.write_all(frame)?;
        if self.sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Empties the log, once everything in it is durable elsewhere.
    pub fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }

    /// The operations appended since the log was `offset` bytes long (an
    /// earlier [`len`](Self::len)). Reads the file again, so the caller keeps
    /// the log from being reset in between.
    pub fn read_from(&self, offset: u64) -> io::Result<Vec<Op>> {
        if offset > self.len {
            return Err(io::Error::other(format!(
                "offset {offset} is past the end of the log ({} bytes)",
                self.len
            )));
        }
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::with_capacity((self.len - offset) as usize);
        file.take(self.len - offset).read_to_end(&mut bytes)?;
        let (ops, valid) = decode_all(&bytes);
        if valid != bytes.len() {
            return Err(io::Error::other(format!(
                "the log has an unreadable record at byte {}",
                offset + valid as u64
            )));
        }
        Ok(ops)
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn encode_frame(op: &Op) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match op {
        Op::Upsert(points) => {
            let with_sparse = points.iter().any(|p| p.sparse.is_some());
            body.push(if with_sparse {
                KIND_UPSERT_SPARSE
            } else {
                KIND_UPSERT
            });
            put_len(&mut body, points.len())?;
            for p in points {
                put_id(&mut body, p.id);
                put_len(&mut body, p.vector.len())?;
                for x in &p.vector {
                    body.extend_from_slice(&x.to_le_bytes());
                }
                let json = serde_json::to_vec(&p.payload).map_err(io::Error::other)?;
                put_len(&mut body, json.len())?;
                body.extend_from_slice(&json);
                if with_sparse {
                    match &p.sparse {
                        None => body.push(0),
                        Some(s) => {
                            body.push(1);
                            put_len(&mut body, s.indices.len())?;
                            for (i, v) in s.indices.iter().zip(&s.values) {
                                body.extend_from_slice(&i.to_le_bytes());
                                body.extend_from_slice(&v.to_le_bytes());
                            }
                        }
                    }
                }
            }
        }
        Op::Delete(ids) => {
            body.push(KIND_DELETE);
            put_len(&mut body, ids.len())?;
            for id in ids {
                put_id(&mut body, *id);
            }
        }
    }
    let mut frame = Vec::with_capacity(HEADER + body.len());
    put_len(&mut frame, body.len())?;
    frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

fn put_len(out: &mut Vec<u8>, n: usize) -> io::Result<()> {
    let n = u32::try_from(n).map_err(|_| io::Error::other("record too large for the log"))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

fn put_id(out: &mut Vec<u8>, id: PointId) {
    match id {
        PointId::Num(n) => {
            out.push(0);
            out.extend_from_slice(&n.to_le_bytes());
        }
        PointId::Uuid(u) => {
            out.push(1);
            out.extend_from_slice(u.as_bytes());
        }
    }
}

/// Decodes whole, checksummed frames; returns them and the length of the
/// valid prefix.
fn decode_all(bytes: &[u8]) -> (Vec<Op>, usize) {
    let mut ops = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let mut r = Reader(&bytes[at..]);
        let (Some(len), Some(crc)) = (r.u32(), r.u32()) else {
            break;
        };
        let Some(body) = r.take(len as usize) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let Some(op) = decode_body(body) else {
            break;
        };
        ops.push(op);
        at += HEADER + len as usize;
    }
    (ops, at)
}

fn decode_body(body: &[u8]) -> Option<Op> {
    let mut r = Reader(body);
    match r.u8()? {
        kind @ (KIND_UPSERT | KIND_UPSERT_SPARSE) => {
            let n = r.u32()? as usize;
            let mut points = Vec::with_capacity(n.min(body.len()));
            for _ in 0..n {
                let id = r.id()?;
                let dim = r.u32()? as usize;
                let raw = r.take(dim.checked_mul(4)?)?;
                let vector = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let plen = r.u32()? as usize;
                let payload: Payload = serde_json::from_slice(r.take(plen)?).ok()?;
                let sparse = if kind == KIND_UPSERT_SPARSE && r.u8()? == 1 {
                    let terms = r.u32()? as usize;
                    let raw = r.take(terms.checked_mul(8)?)?;
                    let (mut indices, mut values) =
                        (Vec::with_capacity(terms), Vec::with_capacity(terms));
                    for c in raw.chunks_exact(8) {
                        indices.push(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                        values.push(f32::from_le_bytes([c[4], c[5], c[6], c[7]]));
                    }
                    Some(SparseVector { indices, values })
                } else {
                    None
                };
                points.push(Point {
                    id,
                    vector,
                    payload,
                    sparse,
                });
            }
            Some(Op::Upsert(points))
        }
        KIND_DELETE => {
            let n = r.u32()? as usize;
            let mut ids = Vec::with_capacity(n.min(body.len()));
            for _ in 0..n {
                ids.push(r.id()?);
            }
            Some(Op::Delete(ids))
        }
        _ => None,
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
    fn id(&mut self) -> Option<PointId> {
        match self.u8()? {
            0 => self.u64().map(PointId::Num),
            1 => Uuid::from_slice(self.take(16)?).ok().map(PointId::Uuid),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn point(id: PointId, x: f32) -> Point {
        let payload = json!({"tag": "a", "n": 3, "nested": {"ok": true}});
        Point {
            id,
            vector: vec![x, -x, 0.5],
            payload: payload.as_object().cloned().unwrap_or_default(),
            sparse: None,
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mlmesh-oplog-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("oplog")
    }

    #[test]
    fn read_from_returns_only_the_later_records() {
        let path = temp_path("read-from");
        let (mut log, _) = OpLog::open(&path, false).expect("open");
        log.append(&Op::Delete(vec![PointId::Num(1)]))
            .expect("append");
        let mark = log.len();
        assert_eq!(log.read_from(mark).expect("read"), Vec::<Op>::new());
        let later = vec![
            Op::Upsert(vec![point(PointId::Num(2), 3.0)]),
            Op::Delete(vec![PointId::Num(2), PointId::Num(3)]),
        ];
        for op in &later {
            log.append(op).expect("append");
        }
        assert_eq!(log.read_from(mark).expect("read"), later);
        assert_eq!(log.read_from(0).expect("read").len(), 3);
        assert!(log.read_from(log.len() + 1).is_err());
    }

    #[test]
    fn records_round_trip_and_reset_empties() {
        let path = temp_path("roundtrip");
        let with_sparse = Point {
            sparse: Some(SparseVector {
                indices: vec![4_000_000_000, 12],
                values: vec![1.25, -0.5],
            }),
            ..point(PointId::Num(8), 3.0)
        };
        let ops = vec![
            Op::Upsert(vec![
                point(PointId::Num(7), 1.0),
                point(PointId::Uuid(Uuid::new_v4()), 2.0),
            ]),
            Op::Delete(vec![PointId::Num(7)]),
            // A sparse vector beside a point without one in the same batch.
            Op::Upsert(vec![with_sparse, point(PointId::Num(9), 4.0)]),
        ];
        {
            let (mut log, old) = OpLog::open(&path, true).expect("open");
            assert!(old.is_empty());
            for op in &ops {
                log.append(op).expect("append");
            }
        }
        let (mut log, back) = OpLog::open(&path, false).expect("reopen");
        assert_eq!(back, ops);
        log.reset().expect("reset");
        drop(log);
        let (_, back) = OpLog::open(&path, false).expect("reopen");
        assert!(back.is_empty());
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_later_appends_survive() {
        let path = temp_path("torn");
        let first = Op::Upsert(vec![point(PointId::Num(1), 1.0)]);
        let second = Op::Upsert(vec![point(PointId::Num(2), 2.0)]);
        {
            let (mut log, _) = OpLog::open(&path, false).expect("open");
            log.append(&first).expect("append");
            log.append(&second).expect("append");
        }
        // A crash in the middle of writing the second record.
        let full = std::fs::metadata(&path).expect("meta").len();
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(full - 5).expect("truncate");
        drop(f);
        let third = Op::Delete(vec![PointId::Num(1)]);
        {
            let (mut log, back) = OpLog::open(&path, false).expect("reopen");
            assert_eq!(back, vec![first.clone()]);
            log.append(&third).expect("append after repair");
        }
        let (_, back) = OpLog::open(&path, false).expect("reopen");
        assert_eq!(back, vec![first, third]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }

    #[test]
    fn a_flipped_bit_ends_the_log_at_that_record() {
        let path = temp_path("crc");
        let op = Op::Upsert(vec![point(PointId::Num(1), 1.0)]);
        {
            let (mut log, _) = OpLog::open(&path, false).expect("open");
            log.append(&op).expect("append");
            log.append(&op).expect("append");
        }
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let (_, back) = OpLog::open(&path, false).expect("reopen");
        assert_eq!(back, vec![op]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }
}
