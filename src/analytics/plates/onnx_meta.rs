//! The metadata of an ONNX file (`ModelProto.metadata_props`), read with a minimal
//! protobuf walker: the recogniser keeps its character list there, under
//! `character`.

/// Reads a varint at `*at`.
fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The fields of one message: (field number, wire type, payload for
/// length-delimited fields).
fn fields(buf: &[u8]) -> Option<Vec<(u64, u8, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let key = varint(buf, &mut at)?;
        let (field, wire) = (key >> 3, (key & 7) as u8);
        match wire {
            0 => {
                varint(buf, &mut at)?;
                out.push((field, wire, &buf[0..0]));
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let len = varint(buf, &mut at)? as usize;
                let end = at.checked_add(len).filter(|e| *e <= buf.len())?;
                out.push((field, wire, &buf[at..end]));
                at = end;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The value of metadata entry `key` in an ONNX model.
pub fn metadata(model: &[u8], key: &str) -> Option<String> {
    // ModelProto field 14: repeated StringStringEntryProto { key = 1; value = 2; }
    for (field, wire, entry) in fields(model)? {
        if field != 14 || wire != 2 {
            continue;
        }
        let parts = fields(entry)?;
        let get = |n| {
            parts
                .iter()
                .find(|(f, w, _)| *f == n && *w == 2)
                .map(|(_, _, v)| String::from_utf8_lossy(v).into_owned())
        };
        if get(1).as_deref() == Some(key) {
            return get(2);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(field: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![(field << 3) | 2, data.len() as u8];
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn a_metadata_entry_is_found_among_other_fields() {
        let mut model = vec![0x08, 0x07]; // ir_version = 7
        model.extend(ld(2, b"producer"));
        let mut entry = ld(1, b"character");
        entry.extend(ld(2, b"a\nb\nc"));
        model.extend(ld(14, &entry));
        assert_eq!(metadata(&model, "character").as_deref(), Some("a\nb\nc"));
        assert_eq!(metadata(&model, "other"), None);
        assert_eq!(
            metadata(&[0xff], "character"),
            None,
            "garbage is not a panic"
        );
    }
}
