//! The tar encoding shared by the layer writer and the archive writers: ustar headers, with a
//! deterministic PAX header only where ustar cannot hold a name, link target, size or id.
//!
//! Every size is computable before any content is read, so a whole tarball's length is known
//! from file metadata; that is what lets an image stream in one pass.

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
    let typeflag = match header.kind {
        Kind::File => b'0',
        Kind::Directory => b'5',
        Kind::Symlink => b'2',
        Kind::CharDevice { .. } => b'3',
        Kind::BlockDevice { .. } => b'4',
        Kind::Fifo => b'6',
    };
    out.write_all(ustar_block(header, typeflag).as_bytes())
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
