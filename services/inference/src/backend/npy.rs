//! Reading NumPy `.npy` arrays (format versions 1–3) and `.npz` archives
//! (zip files of `.npy` members, stored or deflated).

use std::{collections::HashMap, io::Read as _, path::Path};

use crate::error::LoadError;

/// An array read from a `.npy` member, converted to what models need.
#[derive(Clone, Debug)]
pub enum Array {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I64 { shape: Vec<usize>, data: Vec<i64> },
    Text(String),
}

/// Most bytes all members of one `.npz` may decompress to, counted as they
/// are read (a zip's declared sizes can lie): model weights, not a bomb.
pub const MAX_NPZ_BYTES: u64 = 2 << 30;
/// Most members of one `.npz`.
pub const MAX_NPZ_MEMBERS: usize = 4096;

/// Reads every member of an `.npz` file by name (without `.npy`).
pub fn read_npz(path: &Path) -> Result<HashMap<String, Array>, LoadError> {
    read_npz_within(path, MAX_NPZ_BYTES)
}

/// [`read_npz`] with at most `max` bytes decompressed in all.
fn read_npz_within(path: &Path, max: u64) -> Result<HashMap<String, Array>, LoadError> {
    let file = std::fs::File::open(path).map_err(|e| LoadError::file(path, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| LoadError::file(path, format!("not an .npz (zip) file: {e}")))?;
    if zip.len() > MAX_NPZ_MEMBERS {
        return Err(LoadError::file(
            path,
            format!("{} members; at most {MAX_NPZ_MEMBERS}", zip.len()),
        ));
    }
    let mut out = HashMap::new();
    let mut left = max;
    for i in 0..zip.len() {
        let member = zip
            .by_index(i)
            .map_err(|e| LoadError::file(path, format!("member {i}: {e}")))?;
        let name = member.name().trim_end_matches(".npy").to_owned();
        let too_big = || {
            LoadError::file(
                path,
                format!("member {name:?}: the archive decompresses to more than {max} bytes"),
            )
        };
        let declared = member.size();
        if declared > left {
            return Err(too_big());
        }
        // Reserve no more than a modest amount up front: the declared size
        // is only a claim until the bytes arrive. A member that inflates
        // past its claim is refused the moment it does (a bomb whose
        // headers lie costs one byte more than it admits, not the bound).
        let mut bytes = Vec::with_capacity(declared.min(64 << 20) as usize);
        member
            .take(declared + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| LoadError::file(path, format!("member {name:?}: {e}")))?;
        if bytes.len() as u64 > declared {
            return Err(LoadError::file(
                path,
                format!(
                    "member {name:?} decompresses to more than the {declared} bytes its header declares"
                ),
            ));
        }
        left -= bytes.len() as u64;
        let arr = parse_npy(&bytes).map_err(|e| LoadError::file(path, format!("{name}: {e}")))?;
        out.insert(name, arr);
    }
    Ok(out)
}

/// Parses one `.npy` buffer.
pub fn parse_npy(b: &[u8]) -> Result<Array, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (bad magic)".into());
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            if b.len() < 12 {
                return Err("truncated header".into());
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = b
        .get(start..start + hlen)
        .ok_or("truncated header")
        .map(|h| String::from_utf8_lossy(h).into_owned())?;
    let data = &b[start + hlen..];
    let descr = dict_str(&header, "descr").ok_or("header has no descr")?;
    if header.contains("'fortran_order': True") {
        return Err(
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into(),
        );
    }
    let shape = dict_shape(&header).ok_or("header has no readable shape")?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let need = |size: usize| match count.checked_mul(size) {
        Some(n) if data.len() >= n => Ok(()),
        Some(n) => Err(format!(
            "data is {} bytes; shape {shape:?} needs {n}",
            data.len()
        )),
        None => Err(format!("shape {shape:?} overflows")),
    };
    macro_rules! le {
        ($t:ty, $n:expr) => {{
            need($n)?;
            data[..count * $n]
                .chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    <$t>::from_le_bytes(a)
                })
                .collect::<Vec<$t>>()
        }};
    }
    Ok(match descr.as_str() {
        "<f4" => Array::F32 {
            data: le!(f32, 4),
            shape,
        },
        "<f8" => Array::F32 {
            data: le!(f64, 8).into_iter().map(|x| x as f32).collect(),
            shape,
        },
        "<i8" => Array::I64 {
            data: le!(i64, 8),
            shape,
        },
        "<i4" => Array::I64 {
            data: le!(i32, 4).into_iter().map(i64::from).collect(),
            shape,
        },
        "|u1" if count > 0 => {
            need(1)?;
            Array::Text(String::from_utf8_lossy(&data[..count]).into_owned())
        }
        d if d.starts_with("<U") => {
            // Fixed-width UTF-32LE; one string (a 0-d array) is what we read.
            let width: usize = d[2..].parse().map_err(|_| format!("bad descr {d}"))?;
            let width = width
                .checked_mul(4)
                .map(|_| width)
                .ok_or_else(|| format!("bad descr {d}"))?;
            if data.len() < width * 4 {
                return Err(format!(
                    "data is {} bytes; {d} needs {}",
                    data.len(),
                    width * 4
                ));
            }
            let text: String = data[..width * 4]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .take_while(|&c| c != 0)
                .filter_map(char::from_u32)
                .collect();
            Array::Text(text)
        }
        d => {
            return Err(format!(
                "dtype {d} is not supported (float32/64, int32/64, str)"
            ));
        }
    })
}

fn dict_str(header: &str, key: &str) -> Option<String> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = header.get(at + key.len() + 2..)?;
    let q1 = rest.find('\'')?;
    let q2 = rest.get(q1 + 1..)?.find('\'')?;
    rest.get(q1 + 1..q1 + 1 + q2).map(str::to_owned)
}

fn dict_shape(header: &str) -> Option<Vec<usize>> {
    let at = header.find("'shape'")?;
    let rest = header.get(at..)?;
    let open = rest.find('(')?;
    // The closing parenthesis after the opening one, whatever comes before.
    let close = open + rest.get(open..)?.find(')')?;
    rest.get(open + 1..close)?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn reads_floats_ints_and_text() {
        let f: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        match parse_npy(&npy("<f4", "(2, 2)", &f)).expect("f4") {
            Array::F32 { shape, data } => {
                assert_eq!(shape, vec![2, 2]);
                assert_eq!(data, vec![1.0, 2.0, 3.0, 4.0]);
            }
            other => panic!("{other:?}"),
        }
        let t: Vec<u8> = "hi"
            .chars()
            .flat_map(|c| (c as u32).to_le_bytes())
            .collect();
        match parse_npy(&npy("<U2", "()", &t)).expect("text") {
            Array::Text(s) => assert_eq!(s, "hi"),
            other => panic!("{other:?}"),
        }
        let e = parse_npy(&npy("<f4", "(3,)", &f[..8])).expect_err("short");
        assert!(e.contains("needs 12"), "{e}");
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        for (descr, shape) in [
            ("<f4", "(18446744073709551615, 18446744073709551615)"),
            ("<f4", ")("),
            ("<f4", "(2, x)"),
            ("<U99999999999999999999", "()"),
            ("<U4611686018427387904", "()"),
            ("<i8", "(4611686018427387904,)"),
        ] {
            assert!(
                parse_npy(&npy(descr, shape, &[0; 16])).is_err(),
                "{descr} {shape}"
            );
        }
        assert!(parse_npy(b"\x93NUMPY\x02\x00\xff\xff").is_err());
        assert!(parse_npy(b"\x93NUMPY\x01\x00\xff\xff").is_err());
    }

    #[test]
    fn an_npz_that_decompresses_past_the_limit_is_refused_by_what_it_holds() {
        use std::io::Write as _;
        // Members of zeros that inflate far beyond the archive's size,
        // read with a small budget through the same counting path.
        let dir = std::env::temp_dir().join(format!("mlmesh-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("bomb.npz");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&path).expect("create"));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for m in 0..3 {
            z.start_file(format!("W{m}.npy"), opts).expect("member");
            z.write_all(&vec![0u8; 8 << 20]).expect("write");
        }
        z.finish().expect("finish");
        // 24 MiB of zeros in a file of well under 1 MiB.
        assert!(std::fs::metadata(&path).expect("meta").len() < 1 << 20);
        let e = read_npz_within(&path, 4 << 20).expect_err("bomb");
        assert!(e.to_string().contains("decompresses to more than"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
