//! The tar encoding shared by the layer writer and the archive writers: ustar headers, with a
//! deterministic PAX header only where ustar cannot hold a name, link target, size or id.
//!
//! Every size is computable before any content is read, so a whole tarball's length is known
//! from file metadata; that is what lets an image stream in one pass.
//!
//! [`Dialect::Nixpkgs`] encodes headers as nixpkgs' `stream_layered_image.py` does through
//! Python's `tarfile` (PAX format, stream mode): no ustar prefix split (a name over 100
//! characters or not ASCII goes to a PAX `path` record, the ustar field keeping its first 100
//! characters with non-ASCII ones as `?`), a PAX header only for what ustar cannot hold, the
//! checksum as `%06o\0 `, and the archive padded to Python's 10,240-byte records.

use std::io::{self, Write};
use std::thread::Scope;

use crate::error::Result;

/// A tarball whose length is known before it is written: what the image writers take as a layer.
pub trait TarStream: Send + Sync {
    /// The exact number of bytes `write_to` writes.
    fn tar_len(&self) -> u64;
    fn write_to(&self, out: &mut dyn Write) -> Result<()>;
    /// Starts reading the tarball's content now, on a thread of `scope`, for a writer that
    /// streams tarballs one after another: the next one reads while this one is written. The
    /// returned writer writes the same bytes as `write_to`. By default nothing starts early.
    fn read_ahead<'scope>(&'scope self, _scope: &'scope Scope<'scope, '_>) -> StartedTar<'scope> {
        Box::new(move |out| self.write_to(out))
    }
}

/// A tarball whose reading has started: call it to write it.
pub type StartedTar<'a> = Box<dyn FnOnce(&mut dyn Write) -> Result<()> + Send + 'a>;

pub const BLOCK: u64 = 512;

/// The two zero blocks that end a tarball.
pub const END_OF_ARCHIVE: [u8; 1024] = [0; 1024];

/// The largest value ustar's 11-digit octal size field holds (8 GiB - 1).
const USTAR_MAX_SIZE: u64 = 0o777_7777_7777;
/// The largest value of ustar's 7-digit octal uid and gid fields.
const USTAR_MAX_ID: u64 = 0o777_7777;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    /// Special files, which only base images hold (`export` keeps them).
    Fifo,
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
}

/// What one tar entry says about itself. Names are raw bytes: file names need not be UTF-8.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    /// Relative name; directories end in `/`.
    pub name: &'a [u8],
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Content length; 0 for directories and symlinks.
    pub size: u64,
    /// Symlink target; empty otherwise.
    pub link: &'a [u8],
    /// User and group names; empty in store layers (at most 31 bytes each).
    pub uname: &'a [u8],
    pub gname: &'a [u8],
}

impl<'a> Header<'a> {
    /// An entry of an image archive itself (a layer file, the config, `manifest.json`, a blob
    /// directory): owned by root, no names, regular files 0644 and directories 0755.
    pub fn archive_member(name: &'a [u8], kind: Kind, size: u64, mtime: u64) -> Self {
        Header {
            name,
            kind,
            mode: if kind == Kind::Directory {
                0o755
            } else {
                0o644
            },
            uid: 0,
            gid: 0,
            mtime,
            size,
            link: b"",
            uname: b"",
            gname: b"",
        }
    }
}

/// How a tarball's headers are encoded: ours, or as nixpkgs' Python writer does, byte for
/// byte, so that layers share blobs with dockerTools' (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    #[default]
    Ours,
    Nixpkgs,
}

/// Python tarfile's record size: a closed archive is padded to a multiple of it.
const PYTHON_RECORD: u64 = 20 * BLOCK;

impl Dialect {
    /// Bytes taken by a whole entry: headers, content and padding.
    pub fn entry_len(self, header: &Header) -> u64 {
        let headers = match self {
            Dialect::Ours => header_len(header),
            Dialect::Nixpkgs => python::header_len(header),
        };
        headers + padded(header.size)
    }

    /// Writes the header blocks of an entry; its content and `padding` follow from the caller.
    pub fn write_header(self, out: &mut (impl Write + ?Sized), header: &Header) -> io::Result<()> {
        match self {
            Dialect::Ours => write_header(out, header),
            Dialect::Nixpkgs => python::write_header(out, header),
        }
    }

    /// The zero bytes that end a tarball whose entries take `entries` bytes.
    pub fn end_len(self, entries: u64) -> u64 {
        let end = END_OF_ARCHIVE.len() as u64;
        match self {
            Dialect::Ours => end,
            Dialect::Nixpkgs => (entries + end).div_ceil(PYTHON_RECORD) * PYTHON_RECORD - entries,
        }
    }
}

/// Headers as Python's `tarfile` writes them in PAX format.
mod python {
    use super::{BLOCK, Header, Kind, padded, padding, pax_record};
    use std::io::{self, Write};

    /// The PAX records of an entry, in tarfile's order, and whether they are binary.
    fn records(header: &Header) -> Vec<u8> {
        let mut fields: Vec<(&[u8], Vec<u8>)> = Vec::new();
        for (key, value, limit) in [
            (b"path".as_slice(), header.name, 100),
            (b"linkpath", header.link, 100),
            (b"uname", header.uname, 32),
            (b"gname", header.gname, 32),
        ] {
            if !value.is_ascii() || value.len() > limit {
                fields.push((key, value.to_vec()));
            }
        }
        for (key, value, digits) in [
            (b"uid".as_slice(), header.uid, 8),
            (b"gid", header.gid, 8),
            (b"size", header.size, 12),
            (b"mtime", header.mtime, 12),
        ] {
            if !fits(value, digits) {
                fields.push((key, value.to_string().into_bytes()));
            }
        }
        let mut out = Vec::new();
        // tarfile marks raw bytes (names that are not UTF-8) before every other record.
        if fields.iter().any(|(_, v)| std::str::from_utf8(v).is_err()) {
            out.extend_from_slice(b"21 hdrcharset=BINARY\n");
        }
        for (key, value) in fields {
            pax_record(&mut out, key, &value);
        }
        out
    }

    /// Whether a number fits tarfile's octal field of `digits` bytes (one is the NUL).
    fn fits(value: u64, digits: u32) -> bool {
        value < 8u64.pow(digits - 1)
    }

    pub fn header_len(header: &Header) -> u64 {
        let records = records(header).len() as u64;
        if records == 0 {
            BLOCK
        } else {
            BLOCK + padded(records) + BLOCK
        }
    }

    pub fn write_header(out: &mut (impl Write + ?Sized), header: &Header) -> io::Result<()> {
        let records = records(header);
        if !records.is_empty() {
            let pax = Header {
                name: b"././@PaxHeader",
                kind: Kind::File,
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: 0,
                size: records.len() as u64,
                link: b"",
                uname: b"",
                gname: b"",
            };
            out.write_all(&block(&pax, b'x'))?;
            out.write_all(&records)?;
            out.write_all(&[0; BLOCK as usize][..padding(records.len() as u64)])?;
        }
        out.write_all(&block(header, super::typeflag(header.kind)))
    }

    /// A string field: as ASCII, each other character (or byte that is not UTF-8) a `?`,
    /// cut to the field.
    fn text(field: &mut [u8], value: &[u8]) {
        let mut ascii = Vec::with_capacity(value.len());
        for chunk in value.utf8_chunks() {
            ascii.extend(
                chunk
                    .valid()
                    .chars()
                    .map(|c| if c.is_ascii() { c as u8 } else { b'?' }),
            );
            ascii.extend(std::iter::repeat_n(b'?', chunk.invalid().len()));
        }
        let n = ascii.len().min(field.len());
        field[..n].copy_from_slice(&ascii[..n]);
    }

    /// A number field: zero-padded octal and a NUL, or zero where a PAX record holds it.
    fn number(field: &mut [u8], value: u64) {
        let digits = field.len() - 1;
        let value = if fits(value, field.len() as u32) {
            value
        } else {
            0
        };
        let text = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    }

    fn block(header: &Header, typeflag: u8) -> [u8; BLOCK as usize] {
        let mut b = [0u8; BLOCK as usize];
        text(&mut b[0..100], header.name);
        number(&mut b[100..108], u64::from(header.mode & 0o7777));
        number(&mut b[108..116], header.uid);
        number(&mut b[116..124], header.gid);
        number(&mut b[124..136], header.size);
        number(&mut b[136..148], header.mtime);
        b[148..156].fill(b' ');
        b[156] = typeflag;
        text(&mut b[157..257], header.link);
        b[257..265].copy_from_slice(b"ustar\x0000");
        text(&mut b[265..297], header.uname);
        text(&mut b[297..329], header.gname);
        if let Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } = header.kind
        {
            number(&mut b[329..337], u64::from(major));
            number(&mut b[337..345], u64::from(minor));
        }
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        b
    }
}

/// Rounds up to whole blocks.
pub fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// Bytes of zero padding after `size` bytes of content.
pub fn padding(size: u64) -> usize {
    (padded(size) - size) as usize
}

/// Splits a name into ustar's `prefix` (up to 155 bytes) and `name` (up to 100) at a `/`, taking
/// the longest prefix that fits, as Python's tarfile and GNU tar do.
fn ustar_split(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    let limit = name.len().min(156);
    (1..limit)
        .rev()
        .filter(|&i| name[i] == b'/')
        .map(|i| (&name[..i], &name[i + 1..]))
        .find(|(_, rest)| !rest.is_empty() && rest.len() <= 100)
}

/// The PAX records an entry needs, in a fixed order (empty when ustar holds everything).
fn pax_records(header: &Header) -> Vec<u8> {
    let mut records = Vec::new();
    if ustar_split(header.name).is_none() {
        pax_record(&mut records, b"path", header.name);
    }
    if header.link.len() > 100 {
        pax_record(&mut records, b"linkpath", header.link);
    }
    if header.size > USTAR_MAX_SIZE {
        pax_record(&mut records, b"size", header.size.to_string().as_bytes());
    }
    if header.uid > USTAR_MAX_ID {
        pax_record(&mut records, b"uid", header.uid.to_string().as_bytes());
    }
    if header.gid > USTAR_MAX_ID {
        pax_record(&mut records, b"gid", header.gid.to_string().as_bytes());
    }
    records
}

/// One `"<length> <key>=<value>\n"` record; the length counts its own digits.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1; // " key=value\n"
    let mut length = rest + 1;
    while length != rest + length.to_string().len() {
        length = rest + length.to_string().len();
    }
    out.extend_from_slice(length.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Bytes taken by the header blocks of an entry (PAX blocks included), content excluded.
pub fn header_len(header: &Header) -> u64 {
    let pax = pax_records(header).len() as u64;
    if pax == 0 {
        BLOCK
    } else {
        BLOCK + padded(pax) + BLOCK
    }
}

/// Bytes taken by a whole entry: headers, content and padding.
pub fn entry_len(header: &Header) -> u64 {
    header_len(header) + padded(header.size)
}

/// Writes the header blocks of an entry; its content and `padding` follow from the caller.
pub fn write_header(out: &mut (impl Write + ?Sized), header: &Header) -> io::Result<()> {
    let pax = pax_records(header);
    if !pax.is_empty() {
        let pax_header = Header::archive_member(
            b"././@PaxHeader",
            Kind::File,
            pax.len() as u64,
            header.mtime,
        );
        out.write_all(ustar_block(&pax_header, b'x').as_bytes())?;
        out.write_all(&pax)?;
        out.write_all(&[0; BLOCK as usize][..padding(pax.len() as u64)])?;
    }
    out.write_all(ustar_block(header, typeflag(header.kind)).as_bytes())
}

/// The ustar type flag of an entry of `kind`.
fn typeflag(kind: Kind) -> u8 {
    match kind {
        Kind::File => b'0',
        Kind::Directory => b'5',
        Kind::Symlink => b'2',
        Kind::CharDevice { .. } => b'3',
        Kind::BlockDevice { .. } => b'4',
        Kind::Fifo => b'6',
    }
}

/// The 512-byte ustar block; fields that do not fit were put in PAX records and are truncated or
/// zero here.
fn ustar_block(header: &Header, typeflag: u8) -> tar::Header {
    let mut block = tar::Header::new_ustar();
    {
        #[allow(
            clippy::expect_used,
            reason = "a header made by new_ustar is always ustar; no input reaches this"
        )]
        let ustar = block
            .as_ustar_mut()
            .expect("new_ustar makes a ustar header");
        let (prefix, name) = ustar_split(header.name).unwrap_or_else(|| (&[], &header.name[..100]));
        ustar.name[..name.len()].copy_from_slice(name);
        ustar.prefix[..prefix.len()].copy_from_slice(prefix);
        let link = &header.link[..header.link.len().min(100)];
        ustar.linkname[..link.len()].copy_from_slice(link);
        ustar.typeflag[0] = typeflag;
        let uname = &header.uname[..header.uname.len().min(31)];
        ustar.uname[..uname.len()].copy_from_slice(uname);
        let gname = &header.gname[..header.gname.len().min(31)];
        ustar.gname[..gname.len()].copy_from_slice(gname);
    }
    block.set_mode(header.mode);
    block.set_uid(if header.uid > USTAR_MAX_ID {
        0
    } else {
        header.uid
    });
    block.set_gid(if header.gid > USTAR_MAX_ID {
        0
    } else {
        header.gid
    });
    block.set_mtime(header.mtime);
    if let Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } = header.kind {
        // Only fails for headers without device fields, which ustar has.
        let _ = block.set_device_major(major);
        let _ = block.set_device_minor(minor);
    }
    block.set_size(if header.size > USTAR_MAX_SIZE {
        0
    } else {
        header.size
    });
    block.set_cksum();
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a [u8], size: u64, link: &'a [u8]) -> Header<'a> {
        Header {
            name,
            kind: if link.is_empty() {
                Kind::File
            } else {
                Kind::Symlink
            },
            mode: 0o444,
            uid: 0,
            gid: 0,
            mtime: 1,
            size,
            link,
            uname: b"",
            gname: b"",
        }
    }

    fn written(h: &Header) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, h).unwrap();
        out
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", &[b'a'; 93]);
        // " path=" + 93 + "\n" = 100 bytes, plus 3 digits = 103
        assert!(out.starts_with(b"103 path="));
        assert_eq!(out.len(), 103);
    }

    #[test]
    fn short_names_need_one_block() {
        let h = header(b"nix/store/x", 5, b"");
        assert_eq!(header_len(&h), 512);
        assert_eq!(entry_len(&h), 1024);
        assert_eq!(written(&h).len(), 512);
    }

    #[test]
    fn long_names_use_the_ustar_prefix_then_pax() {
        let dir = "d".repeat(120);
        let name = format!("{dir}/file");
        let h = header(name.as_bytes(), 0, b"");
        assert_eq!(header_len(&h), 512, "fits prefix+name");
        let block = written(&h);
        assert_eq!(&block[345..345 + 120], dir.as_bytes());

        let name = "n".repeat(300);
        let h = header(name.as_bytes(), 0, b"");
        assert_eq!(header_len(&h), 512 * 3);
        assert_eq!(written(&h).len(), 512 * 3);
    }

    #[test]
    fn long_link_targets_and_huge_sizes_use_pax() {
        let target = "t".repeat(150);
        let h = header(b"l", 0, target.as_bytes());
        assert_eq!(header_len(&h), 512 * 3);
        let big = header(b"big", 9 << 30, b"");
        let out = written(&big);
        assert_eq!(out.len(), 512 * 3);
        assert!(out.windows(15).any(|w| w == b"size=9663676416"));
    }

    fn written_in(dialect: Dialect, h: &Header) -> Vec<u8> {
        let mut out = Vec::new();
        dialect.write_header(&mut out, h).unwrap();
        assert_eq!(
            out.len() as u64 + padded(h.size),
            dialect.entry_len(h),
            "the length counted is the length written"
        );
        out
    }

    #[test]
    fn python_headers_put_long_and_non_ascii_names_in_pax_records_without_a_prefix() {
        let dir = "d".repeat(120);
        let name = format!("/{dir}/file");
        let out = written_in(Dialect::Nixpkgs, &header(name.as_bytes(), 0, b""));
        assert_eq!(out.len(), 512 * 3, "a PAX header, its records, the entry");
        assert_eq!(&out[..14], b"././@PaxHeader");
        assert_eq!(out[156], b'x');
        let record = format!("path={name}\n");
        assert!(
            out[512..1024]
                .windows(record.len())
                .any(|w| w == record.as_bytes())
        );
        // The entry's own name field: the first 100 characters, no prefix field.
        assert_eq!(&out[1024..1124], &name.as_bytes()[..100]);
        assert!(out[1024 + 345..1024 + 500].iter().all(|&b| b == 0));

        let out = written_in(Dialect::Nixpkgs, &header("/café".as_bytes(), 0, b""));
        assert_eq!(&out[1024..1030], b"/caf?\0", "one ? per character");
        let out = written_in(Dialect::Nixpkgs, &header(b"/raw-\xff\xfe", 0, b""));
        assert!(out[512..].starts_with(b"21 hdrcharset=BINARY\n"));
        assert_eq!(&out[1024..1032], b"/raw-??\0");
        // 100 ASCII bytes fit; 101 do not.
        assert_eq!(
            written_in(Dialect::Nixpkgs, &header(&[b'n'; 100], 0, b"")).len(),
            512
        );
        assert_eq!(
            written_in(Dialect::Nixpkgs, &header(&[b'n'; 101], 0, b"")).len(),
            1536
        );
    }

    #[test]
    fn python_headers_number_fields_and_checksum() {
        let mut h = header(b"/nix/", 0, b"");
        h.kind = Kind::Directory;
        h.mode = 0o40755;
        h.uname = b"root";
        h.gname = b"root";
        let out = written_in(Dialect::Nixpkgs, &h);
        assert_eq!(&out[100..108], b"0000755\0", "permission bits only");
        assert_eq!(&out[136..148], b"00000000001\0");
        assert_eq!(&out[257..265], b"ustar\x0000");
        assert_eq!(&out[265..270], b"root\0");
        assert!(out[329..345].iter().all(|&b| b == 0), "no device numbers");
        let sum: u32 = out[..148]
            .iter()
            .chain(&[b' '; 8])
            .chain(&out[156..])
            .map(|&b| u32::from(b))
            .sum();
        assert_eq!(&out[148..156], format!("{sum:06o}\0 ").as_bytes());
        // An id beyond 7 octal digits goes to a PAX record, the field holding 0.
        h.uid = 3_000_000;
        let out = written_in(Dialect::Nixpkgs, &h);
        assert!(out[512..1024].starts_with(b"15 uid=3000000\n"));
        assert_eq!(&out[1024 + 108..1024 + 116], b"0000000\0");
    }

    #[test]
    fn python_archives_end_on_whole_records() {
        assert_eq!(Dialect::Ours.end_len(512), 1024);
        assert_eq!(Dialect::Nixpkgs.end_len(512), 10240 - 512);
        assert_eq!(Dialect::Nixpkgs.end_len(10240 - 1024), 1024);
        assert_eq!(Dialect::Nixpkgs.end_len(10240 - 512), 10240 + 512);
    }

    #[test]
    fn what_we_write_the_tar_crate_reads_back() {
        let long = format!("{}/{}", "a".repeat(200), "b".repeat(50));
        let mut archive = Vec::new();
        for (name, content) in [
            (b"short".as_slice(), b"hello".as_slice()),
            (long.as_bytes(), b"x"),
        ] {
            let h = header(name, content.len() as u64, b"");
            write_header(&mut archive, &h).unwrap();
            archive.extend_from_slice(content);
            archive.extend(std::iter::repeat_n(0, padding(content.len() as u64)));
        }
        archive.extend_from_slice(&END_OF_ARCHIVE);
        let mut reader = tar::Archive::new(archive.as_slice());
        let names: Vec<Vec<u8>> = reader
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect();
        assert_eq!(names, vec![b"short".to_vec(), long.into_bytes()]);
    }
}
