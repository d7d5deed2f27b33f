//! The VMDK text descriptor: `key="value"` lines (createType, CID, parentCID,
//! parentFileNameHint) and extent lines (`RW 4192256 SPARSE "disk-s001.vmdk"`,
//! `RW 2048 FLAT "disk-flat.vmdk" 0`, `RW 2048 ZERO`).

use crate::Error;

/// Most extents a descriptor may name: 8 TiB of 2 GiB pieces.
pub(super) const MAX_EXTENTS: usize = 4096;

/// One extent line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExtentLine {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub(crate) access: String,
    /// Size in sectors.
    pub(crate) sectors: u64,
    /// `FLAT`, `SPARSE`, `ZERO`, `VMFS`, `VMFSSPARSE`, ...
    pub(crate) kind: String,
    /// The file, as written (none for `ZERO`).
    pub(crate) file: Option<String>,
    /// Offset of the extent in a flat file, in sectors.
    pub(crate) offset: u64,
    /// Line number (1-based), for messages.
    pub(crate) line: usize,
}

/// A parsed descriptor.
#[derive(Clone, Debug, Default)]
pub(crate) struct Descriptor {
    /// `createType`.
    pub(crate) create_type: Option<String>,
    /// `parentFileNameHint`: the parent of a differencing disk.
    pub(crate) parent_hint: Option<String>,
    /// `CID`.
    pub(crate) cid: Option<String>,
    /// `parentCID` (`ffffffff` when there is no parent).
    pub(crate) parent_cid: Option<String>,
    /// The extents, in disk order.
    pub(crate) extents: Vec<ExtentLine>,
}

fn bad(line: usize, d: impl std::fmt::Display) -> Error {
    Error::corrupt("vmdk descriptor", format!("line {line}: {d}"))
}

/// Parses descriptor text. Malformed extent lines and more than [`MAX_EXTENTS`] extents are
/// errors naming the line; other lines are taken as `key=value` or ignored.
pub(crate) fn parse(text: &str) -> crate::Result<Descriptor> {
    let mut d = Descriptor::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let first = l.split_whitespace().next().unwrap_or("");
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            if d.extents.len() >= MAX_EXTENTS {
                return Err(bad(
                    n,
                    format!("more than {MAX_EXTENTS} extents: not a disk this version opens"),
                ));
            }
            d.extents.push(extent_line(l, n)?);
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "createType" => d.create_type = Some(v),
                "parentFileNameHint" => d.parent_hint = Some(v).filter(|v| !v.is_empty()),
                "CID" => d.cid = Some(v),
                "parentCID" => d.parent_cid = Some(v),
                _ => {}
            }
        }
    }
    Ok(d)
}

/// Parses `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
fn extent_line(l: &str, n: usize) -> crate::Result<ExtentLine> {
    let mut rest = l;
    let mut word = || {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (w, r) = t.split_at(end);
        rest = r;
        w
    };
    let access = word().to_string();
    let sectors_s = word();
    let sectors: u64 = sectors_s
        .parse()
        .map_err(|_| bad(n, format!("extent size {sectors_s:?} is not a number")))?;
    let kind = word().to_ascii_uppercase();
    if kind.is_empty() {
        return Err(bad(n, "extent line without a type"));
    }
    let r = rest.trim();
    let (file, tail) = if let Some(q) = r.strip_prefix('"') {
        let end = q
            .find('"')
            .ok_or_else(|| bad(n, "extent file name without its closing quote"))?;
        (Some(q[..end].to_string()), q[end + 1..].trim())
    } else if r.is_empty() {
        (None, "")
    } else {
        return Err(bad(n, format!("extent file name {r:?} is not quoted")));
    };
    let offset = match tail.split_whitespace().next() {
        None => 0,
        Some(o) => o
            .parse()
            .map_err(|_| bad(n, format!("extent offset {o:?} is not a number")))?,
    };
    if file.is_none() && kind != "ZERO" {
        return Err(bad(n, format!("{kind} extent without a file name")));
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
        line: n,
    })
}

/// True if `head` looks like a descriptor as qemu recognises one: comment and blank lines,
/// then `version=1`, `2` or `3`.
pub(crate) fn looks_like(head: &[u8]) -> bool {
    if head.starts_with(b"# Disk DescriptorFile") {
        return true;
    }
    let mut p = head;
    loop {
        match p.first() {
            None => return false,
            Some(b'#') => match p.iter().position(|&b| b == b'\n') {
                Some(i) => p = &p[i + 1..],
                None => return false,
            },
            Some(b' ') | Some(b'\r') | Some(b'\n') => {
                let line_end = p.iter().position(|&b| b == b'\n');
                let line = &p[..line_end.unwrap_or(p.len())];
                if line.iter().any(|&b| b != b' ' && b != b'\r') {
                    return false;
                }
                match line_end {
                    Some(i) => p = &p[i + 1..],
                    None => return false,
                }
            }
            Some(_) => {
                return [b"version=1", b"version=2", b"version=3"]
                    .iter()
                    .any(|v| p.starts_with(*v) && matches!(p.get(9), Some(b'\n') | Some(b'\r')));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_lines() {
        let d = parse(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
             createType=\"twoGbMaxExtentFlat\"\n\
             RW 4194304 FLAT \"a b-f001.vmdk\" 0\nRDONLY 10 SPARSE \"s.vmdk\"\nRW 5 ZERO\n\
             ddb.adapterType = \"ide\"\n",
        )
        .unwrap();
        assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentFlat"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file.as_deref(), Some("a b-f001.vmdk"));
        assert_eq!(d.extents[1].kind, "SPARSE");
        assert_eq!(d.extents[2].file, None);
        assert!(parse("RW x FLAT \"a\" 0").is_err());
        assert!(parse("RW 1 FLAT \"a 0").is_err());
        assert!(parse("RW 1 FLAT").is_err());
        let many = "RW 1 ZERO\n".repeat(MAX_EXTENTS + 1);
        assert!(parse(&many).is_err());
    }

    #[test]
    fn recognised_like_qemu() {
        assert!(looks_like(b"# Disk DescriptorFile\n"));
        assert!(looks_like(b"# x\n  \nversion=1\nfoo"));
        assert!(!looks_like(b"# x\nhello\n"));
        assert!(!looks_like(b"version=4\n"));
    }
}
