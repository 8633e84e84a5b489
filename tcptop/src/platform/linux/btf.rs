//! Minimal reader for the kernel's BTF blob (`/sys/kernel/btf/vmlinux`).
//!
//! The eBPF programs are written in Rust without CO-RE relocations, so the
//! user-space side looks up the byte offsets of the few kernel struct members
//! they need here at start-up and hands them to the programs.
//!
//! Written from the format description in the kernel documentation
//! (Documentation/bpf/btf.rst). Only little-endian blobs are accepted; every
//! read is bounds-checked so that a malformed blob yields
//! [`BtfError::Malformed`] instead of a panic.
//!
//! Aya parses the same blob a second time (`hooks::TracingBtf`, from the
//! bytes read here: the file is read once), to load BTF-typed programs,
//! whose loaders take an `aya::Btf`. The two parses remain because aya's
//! `Btf` exposes neither member offsets nor function prototypes (its
//! types, strings and lookups by id are crate-private; only the id of a
//! name is public), so this reader cannot be built on it, and aya cannot
//! be handed anything lighter than its own parse: the ids it finds must be
//! the kernel's. This one is the smaller and quicker (4 ms against aya's
//! 16 ms on a 6.18 kernel); aya's is dropped once the programs are
//! attached, this one at the end of start-up.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Errors from reading BTF or looking up struct members in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF from {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed kernel BTF: {0}")]
    Malformed(String),
    #[error("kernel BTF has no struct {0:?}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt:?} has no member {member:?}")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF: member {member:?} of struct {strukt:?} is a bitfield")]
    Bitfield { strukt: String, member: String },
    #[error(
        "kernel BTF: member {member:?} of struct {strukt:?} is not byte aligned (bit offset {bit_offset})"
    )]
    Unaligned {
        strukt: String,
        member: String,
        bit_offset: u64,
    },
    #[error("kernel BTF: member {member:?} of struct {strukt:?} is not a struct or union")]
    NotComposite { strukt: String, member: String },
}

const MAGIC: u16 = 0xeb9f;
const VERSION: u8 = 1;
/// Size of the fixed part of `struct btf_header` (up to and including `str_len`).
const HEADER_MIN_LEN: usize = 24;
/// Size of `struct btf_type`.
const TYPE_LEN: usize = 12;

const KIND_INT: u8 = 1;
const KIND_PTR: u8 = 2;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_FWD: u8 = 7;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC: u8 = 12;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_FLOAT: u8 = 16;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

/// Longest chain of typedef/const/volatile/... modifiers followed before
/// giving up (guards against reference cycles in malformed input).
const MAX_MODIFIER_CHAIN: usize = 64;
/// Deepest nesting of anonymous struct/union members searched (guards
/// against cycles in malformed input and unbounded recursion).
const MAX_ANON_DEPTH: usize = 32;

/// One `struct btf_type`, with the kind-specific data we care about.
#[derive(Clone, Copy)]
struct Type {
    kind: u8,
    kind_flag: bool,
    vlen: u16,
    name_off: u32,
    /// `size` for INT/ENUM/STRUCT/UNION/DATASEC/FLOAT, referenced type id otherwise.
    size_or_type: u32,
    /// INT: the encoding word; STRUCT/UNION: index of the first member in
    /// `Btf::members`; otherwise 0.
    extra: u32,
}

impl Type {
    const VOID: Type = Type {
        kind: 0,
        kind_flag: false,
        vlen: 0,
        name_off: 0,
        size_or_type: 0,
        extra: 0,
    };

    fn is_composite(&self) -> bool {
        self.kind == KIND_STRUCT || self.kind == KIND_UNION
    }
}

/// One `struct btf_member`.
#[derive(Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Raw offset word: bit offset, or `bitfield_size << 24 | bit_offset`
    /// when the containing struct has `kind_flag` set.
    offset: u32,
}

/// A member found by name, relative to the struct searched.
struct Found {
    bit_offset: u64,
    type_id: u32,
    bitfield: bool,
}

/// Parsed BTF: all types (indexed by type id, id 0 = void), the members of
/// all structs/unions, the string section, an index of struct names and the
/// list of functions.
pub struct Btf {
    data: Vec<u8>,
    /// Byte range of the string section inside `data`.
    str_start: usize,
    str_end: usize,
    types: Vec<Type>,
    members: Vec<Member>,
    /// Struct name -> type id of the first STRUCT with that name.
    structs: HashMap<Box<[u8]>, u32>,
    /// Every FUNC as (name offset, type id), in id order.
    funcs: Vec<(u32, u32)>,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("bytes", &self.data.len())
            .field("types", &self.types.len().saturating_sub(1))
            .field("structs", &self.structs.len())
            .field("funcs", &self.funcs.len())
            .finish_non_exhaustive()
    }
}

fn malformed(msg: impl Into<String>) -> BtfError {
    BtfError::Malformed(msg.into())
}

fn read_u32(buf: &[u8], off: usize) -> Option<u32> {
    let end = off.checked_add(4)?;
    let bytes: [u8; 4] = buf.get(off..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// Byte range `[base + off, base + off + len)` if it lies inside a buffer of `total` bytes.
fn section(base: usize, off: u32, len: u32, total: usize) -> Option<(usize, usize)> {
    let start = base.checked_add(usize::try_from(off).ok()?)?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= total).then_some((start, end))
}

impl Btf {
    /// Reads and parses a BTF blob from `path` (normally `/sys/kernel/btf/vmlinux`).
    ///
    /// # Errors
    ///
    /// [`BtfError::Io`] if the file cannot be read, [`BtfError::Malformed`]
    /// if it is not a valid little-endian BTF blob.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Btf::from_bytes(data)
    }

    /// Parses a BTF blob held in memory.
    ///
    /// # Errors
    ///
    /// [`BtfError::Malformed`] if `data` is not a valid little-endian BTF blob.
    pub fn from_bytes(data: Vec<u8>) -> Result<Btf, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| malformed("blob too short for a header"))?;
        if magic != MAGIC {
            return Err(malformed(format!(
                "bad magic {magic:#06x} (expected {MAGIC:#06x}; only little-endian BTF is supported)"
            )));
        }
        let version = data.get(2).copied().unwrap_or(0);
        if version != VERSION {
            return Err(malformed(format!("unsupported version {version}")));
        }
        let hdr = |off: usize| read_u32(&data, off).ok_or_else(|| malformed("truncated header"));
        let hdr_len = usize::try_from(hdr(4)?).map_err(|_| malformed("bad header length"))?;
        if hdr_len < HEADER_MIN_LEN || hdr_len > data.len() {
            return Err(malformed(format!("bad header length {hdr_len}")));
        }
        let (type_off, type_len, str_off, str_len) = (hdr(8)?, hdr(12)?, hdr(16)?, hdr(20)?);
        let (type_start, type_end) = section(hdr_len, type_off, type_len, data.len())
            .ok_or_else(|| malformed("type section out of bounds"))?;
        let (str_start, str_end) = section(hdr_len, str_off, str_len, data.len())
            .ok_or_else(|| malformed("string section out of bounds"))?;
        let type_data = data
            .get(type_start..type_end)
            .ok_or_else(|| malformed("type section out of bounds"))?;

        let (types, members) = parse_types(type_data)?;
        let mut btf = Btf {
            str_start,
            str_end,
            types,
            members,
            structs: HashMap::new(),
            funcs: Vec::new(),
            data,
        };
        btf.index_names()?;
        Ok(btf)
    }

    /// Byte offset of `member` inside `struct strukt` (the first STRUCT named
    /// so).
    ///
    /// The member may sit inside anonymous struct/union members at any depth
    /// (e.g. `sock_common.skc_daddr`). A dotted path `"a.b"` follows named
    /// nested struct/union members (e.g. `"ns.inum"` inside `struct net`),
    /// looking through typedefs and qualifiers. Bitfields and members that are
    /// not byte aligned are rejected.
    ///
    /// # Errors
    ///
    /// [`BtfError::NoStruct`], [`BtfError::NoMember`], [`BtfError::Bitfield`],
    /// [`BtfError::Unaligned`], [`BtfError::NotComposite`] (a non-final path
    /// component is not a struct/union), or [`BtfError::Malformed`] if the
    /// types involved are inconsistent.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let no_member = || BtfError::NoMember {
            strukt: strukt.to_owned(),
            member: member.to_owned(),
        };
        let &struct_id = self
            .structs
            .get(strukt.as_bytes())
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;

        let parts: Vec<&str> = member.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(no_member());
        }

        let mut container = struct_id;
        let mut bit_offset: u64 = 0;
        for (i, part) in parts.iter().enumerate() {
            let found = self
                .find_member(container, part.as_bytes(), 0)?
                .ok_or_else(no_member)?;
            let path = || parts[..=i].join(".");
            if found.bitfield {
                return Err(BtfError::Bitfield {
                    strukt: strukt.to_owned(),
                    member: path(),
                });
            }
            bit_offset = bit_offset
                .checked_add(found.bit_offset)
                .ok_or_else(|| malformed("member offset overflow"))?;
            let (resolved_id, resolved) = self.resolve(found.type_id)?;
            if i + 1 < parts.len() {
                if !resolved.is_composite() {
                    return Err(BtfError::NotComposite {
                        strukt: strukt.to_owned(),
                        member: path(),
                    });
                }
                container = resolved_id;
            } else if resolved.kind == KIND_INT && is_int_bitfield(&resolved) {
                // Old-style bitfield encoding (struct without kind_flag).
                return Err(BtfError::Bitfield {
                    strukt: strukt.to_owned(),
                    member: path(),
                });
            }
        }

        if !bit_offset.is_multiple_of(8) {
            return Err(BtfError::Unaligned {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
                bit_offset,
            });
        }
        u32::try_from(bit_offset / 8).map_err(|_| malformed("member offset overflow"))
    }

    /// Looks for a member called `name` directly in struct/union `id` or
    /// inside its anonymous struct/union members (depth first).
    fn find_member(&self, id: u32, name: &[u8], depth: usize) -> Result<Option<Found>, BtfError> {
        if depth > MAX_ANON_DEPTH {
            return Err(malformed("anonymous members nested too deeply (cycle?)"));
        }
        let ty = self.ty(id)?;
        if !ty.is_composite() {
            return Ok(None);
        }
        for m in self.members_of(&ty)? {
            let (bit_offset, bitfield_size) = if ty.kind_flag {
                (m.offset & 0x00ff_ffff, m.offset >> 24)
            } else {
                (m.offset, 0)
            };
            let member_name = self.name(m.name_off)?;
            if member_name == name {
                return Ok(Some(Found {
                    bit_offset: u64::from(bit_offset),
                    type_id: m.type_id,
                    bitfield: bitfield_size != 0,
                }));
            }
            if member_name.is_empty() {
                let (inner_id, inner) = self.resolve(m.type_id)?;
                if inner.is_composite()
                    && let Some(mut found) = self.find_member(inner_id, name, depth + 1)?
                {
                    found.bit_offset += u64::from(bit_offset);
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    fn ty(&self, id: u32) -> Result<Type, BtfError> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.types.get(i))
            .copied()
            .ok_or_else(|| malformed(format!("type id {id} out of range")))
    }

    fn members_of(&self, ty: &Type) -> Result<&[Member], BtfError> {
        let start = ty.extra as usize;
        start
            .checked_add(usize::from(ty.vlen))
            .and_then(|end| self.members.get(start..end))
            .ok_or_else(|| malformed("member index out of range"))
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<(u32, Type), BtfError> {
        for _ in 0..MAX_MODIFIER_CHAIN {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return Ok((id, ty)),
            }
        }
        Err(malformed(format!(
            "type modifier chain too long at type id {id} (cycle?)"
        )))
    }

    /// NUL-terminated string at `off` in the string section.
    fn name(&self, off: u32) -> Result<&[u8], BtfError> {
        let strs = self
            .data
            .get(self.str_start..self.str_end)
            .ok_or_else(|| malformed("string section out of bounds"))?;
        let rest = usize::try_from(off)
            .ok()
            .and_then(|o| strs.get(o..))
            .ok_or_else(|| malformed(format!("string offset {off} out of range")))?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(format!("unterminated string at offset {off}")))?;
        Ok(&rest[..len])
    }

    /// Size in bytes of the struct `name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        let &id = self
            .structs
            .get(name.as_bytes())
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))?;
        Ok(self.ty(id)?.size_or_type)
    }

    /// Whether the kernel has a struct named `name`.
    pub fn has_struct(&self, name: &str) -> bool {
        self.structs.contains_key(name.as_bytes())
    }

    /// Number of parameters of the kernel function `name`, or `None` if the
    /// kernel has no such function (in BTF).
    pub fn func_param_count(&self, name: &str) -> Option<usize> {
        let want = name.as_bytes();
        if want.contains(&0) {
            return None;
        }
        let strs = self.data.get(self.str_start..self.str_end)?;
        // Compared in place: most differ at their first byte.
        let &(_, id) = self.funcs.iter().find(|&&(off, _)| {
            let at = usize::try_from(off).ok().and_then(|o| strs.get(o..));
            at.is_some_and(|s| s.starts_with(want) && s.get(want.len()) == Some(&0))
        })?;
        let func = self.ty(id).ok()?;
        let proto = self.types.get(usize::try_from(func.size_or_type).ok()?)?;
        (proto.kind == KIND_FUNC_PROTO).then_some(usize::from(proto.vlen))
    }

    /// The blob as read: aya parses it again for BTF-typed programs
    /// (`hooks::TracingBtf`), from here rather than from the file.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Indexes struct names and lists the functions, in one walk of the
    /// types. Functions are not hashed by name: on a 6.18 kernel's BTF
    /// (55,834 of them) that cost 5 ms, more than start-up's eight lookups
    /// take scanning this list (0.1 ms each; walking every type and
    /// measuring each name took 1 ms each).
    fn index_names(&mut self) -> Result<(), BtfError> {
        let mut structs = HashMap::new();
        let mut funcs = Vec::new();
        for (id, ty) in self.types.iter().enumerate() {
            if ty.name_off == 0 {
                continue;
            }
            let id = u32::try_from(id).map_err(|_| malformed("too many types"))?;
            match ty.kind {
                KIND_STRUCT => {
                    let name = self.name(ty.name_off)?;
                    if !name.is_empty() {
                        structs.entry(Box::<[u8]>::from(name)).or_insert(id);
                    }
                }
                KIND_FUNC => funcs.push((ty.name_off, id)),
                _ => {}
            }
        }
        self.structs = structs;
        self.funcs = funcs;
        Ok(())
    }
}

/// Whether an INT type carries an old-style bitfield encoding
/// (`BTF_INT_OFFSET != 0` or fewer bits than its size).
fn is_int_bitfield(ty: &Type) -> bool {
    let bits = ty.extra & 0xff;
    let offset = (ty.extra >> 16) & 0xff;
    offset != 0 || u64::from(bits) < u64::from(ty.size_or_type) * 8
}

/// Walks the type section. Returns the types indexed by id (index 0 is void)
/// and the members of all structs/unions.
fn parse_types(buf: &[u8]) -> Result<(Vec<Type>, Vec<Member>), BtfError> {
    // Rough capacity guesses: kernel BTF averages well over 12 bytes per type.
    let mut types = Vec::with_capacity(buf.len() / 32 + 1);
    let mut members = Vec::with_capacity(buf.len() / 64);
    types.push(Type::VOID);

    let mut pos = 0usize;
    while pos < buf.len() {
        let id = types.len();
        let truncated = || malformed(format!("type id {id} truncated"));
        let name_off = read_u32(buf, pos).ok_or_else(truncated)?;
        let info = read_u32(buf, pos + 4).ok_or_else(truncated)?;
        let size_or_type = read_u32(buf, pos + 8).ok_or_else(truncated)?;
        pos += TYPE_LEN;

        let vlen = (info & 0xffff) as u16;
        let kind = ((info >> 24) & 0x1f) as u8;
        let kind_flag = info >> 31 != 0;
        let n = usize::from(vlen);
        let extra_len = match kind {
            KIND_INT => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * n,
            KIND_ENUM | KIND_FUNC_PROTO => 8 * n,
            KIND_VAR | KIND_DECL_TAG => 4,
            KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
            | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
            _ => return Err(malformed(format!("type id {id} has unknown kind {kind}"))),
        };
        let extra_data = pos
            .checked_add(extra_len)
            .and_then(|end| buf.get(pos..end))
            .ok_or_else(truncated)?;
        pos += extra_len;

        let extra = match kind {
            KIND_INT => read_u32(extra_data, 0).ok_or_else(truncated)?,
            KIND_STRUCT | KIND_UNION => {
                let first =
                    u32::try_from(members.len()).map_err(|_| malformed("too many members"))?;
                for m in extra_data.as_chunks::<12>().0 {
                    members.push(Member {
                        name_off: read_u32(m, 0).ok_or_else(truncated)?,
                        type_id: read_u32(m, 4).ok_or_else(truncated)?,
                        offset: read_u32(m, 8).ok_or_else(truncated)?,
                    });
                }
                first
            }
            _ => 0,
        };
        types.push(Type {
            kind,
            kind_flag,
            vlen,
            name_off,
            size_or_type,
            extra,
        });
    }
    Ok((types, members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_vmlinux_functions() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("skipping: no {}", path.display());
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        assert_eq!(btf.func_param_count("tcp_sendmsg"), Some(3));
        // sk, msg, len, [nonblock (< 5.19),] flags, [addr_len (< 6.16)]
        let n = btf.func_param_count("tcp_recvmsg").unwrap();
        assert!((4..=6).contains(&n), "{n}");
        assert_eq!(btf.func_param_count("no_such_function_here"), None);
    }

    /// Builds small BTF blobs by hand.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn raw(&mut self, name: &str, kind: u8, kind_flag: bool, vlen: u16, sot: u32) -> u32 {
            let name_off = self.str(name);
            let info = u32::from(vlen) | (u32::from(kind) << 24) | (u32::from(kind_flag) << 31);
            for w in [name_off, info, sot] {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        fn word(&mut self, w: u32) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.int_enc(name, size, 0, size * 8)
        }

        fn int_enc(&mut self, name: &str, size: u32, bit_offset: u32, bits: u32) -> u32 {
            let id = self.raw(name, KIND_INT, false, 0, size);
            self.word((bit_offset << 16) | bits);
            id
        }

        fn modifier(&mut self, kind: u8, name: &str, target: u32) -> u32 {
            self.raw(name, kind, false, 0, target)
        }

        /// `members`: (name, type id, raw offset word).
        fn composite(
            &mut self,
            kind: u8,
            name: &str,
            size: u32,
            kind_flag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let id = self.raw(name, kind, kind_flag, members.len() as u16, size);
            for &(mname, ty, off) in members {
                let n = self.str(mname);
                self.word(n);
                self.word(ty);
                self.word(off);
            }
            id
        }

        fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            self.composite(KIND_STRUCT, name, size, false, members)
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.push(VERSION);
            out.push(0); // flags
            for w in [
                HEADER_MIN_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A blob exercising most of the lookup paths.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let u32_t = b.int("unsigned int", 4);
        let u16_t = b.int("short unsigned int", 2);
        let u64_t = b.int("long long unsigned int", 8);
        // Other kinds, so the parser walks over their kind-specific data.
        let ptr = b.modifier(KIND_PTR, "", u32_t);
        b.raw("arr", KIND_ARRAY, false, 0, 0);
        b.word(u32_t);
        b.word(u32_t);
        b.word(16);
        b.raw("e", KIND_ENUM, false, 2, 4);
        for w in [0, 0, 0, 1] {
            b.word(w);
        }
        b.raw("", KIND_FUNC_PROTO, false, 1, u32_t);
        b.word(0);
        b.word(ptr);
        b.raw("e64", KIND_ENUM64, false, 1, 8);
        for w in [0, 1, 2] {
            b.word(w);
        }
        b.raw("v", KIND_VAR, false, 0, u32_t);
        b.word(1);
        b.raw("tag", KIND_DECL_TAG, false, 0, u32_t);
        b.word(u32::MAX);
        b.raw(".data", KIND_DATASEC, false, 1, 4);
        for w in [u32_t, 0, 4] {
            b.word(w);
        }
        b.raw("float", KIND_FLOAT, false, 0, 4);
        b.raw("fwd", KIND_FWD, false, 0, 0);

        // A union (not a struct) named "plain" must not shadow the struct.
        b.composite(KIND_UNION, "plain", 4, false, &[("zzz", u32_t, 0)]);
        // struct plain { u32 a; u32 b; u64 c; };
        b.strukt(
            "plain",
            16,
            &[("a", u32_t, 0), ("b", u32_t, 32), ("c", u64_t, 64)],
        );
        // A later struct with the same name is ignored.
        b.strukt("plain", 4, &[("late", u32_t, 0)]);

        // struct sock_common {
        //     u64 first;
        //     struct {               /* anon, at byte 8 */
        //         u32 pad;
        //         union {            /* anon, at byte 4 (via volatile) */
        //             u32 skc_daddr;
        //             struct { u16 lo; u16 skc_port; };  /* anon */
        //         };
        //     };
        // };
        let inner = b.composite(
            KIND_STRUCT,
            "",
            4,
            true,
            &[("lo", u16_t, 0), ("skc_port", u16_t, 16)],
        );
        let un = b.composite(
            KIND_UNION,
            "",
            4,
            false,
            &[("skc_daddr", u32_t, 0), ("", inner, 0)],
        );
        let vol_un = b.modifier(KIND_VOLATILE, "", un);
        let anon = b.composite(
            KIND_STRUCT,
            "",
            8,
            false,
            &[("pad", u32_t, 0), ("", vol_un, 32)],
        );
        b.strukt("sock_common", 16, &[("first", u64_t, 0), ("", anon, 64)]);

        // struct ns_common { u64 stash; u32 inum; };
        // typedef struct ns_common ns_t;
        // struct net { u32 x; u32 y; const ns_t ns; };
        let ns = b.strukt("ns_common", 16, &[("stash", u64_t, 0), ("inum", u32_t, 64)]);
        let td = b.modifier(KIND_TYPEDEF, "ns_t", ns);
        let cst = b.modifier(KIND_CONST, "", td);
        let tt = b.modifier(KIND_TYPE_TAG, "rcu", cst);
        b.strukt(
            "net",
            24,
            &[("x", u32_t, 0), ("y", u32_t, 32), ("ns", tt, 64)],
        );

        // struct bits { u32 a:3; u32 b:5; u32 c; u8 d:3 (old style); u8 e (bit 4) };
        b.composite(
            KIND_STRUCT,
            "bits",
            12,
            true,
            &[
                ("a", u32_t, 3 << 24),
                ("b", u32_t, (5 << 24) | 3),
                ("c", u32_t, 32),
            ],
        );
        let u8_3 = b.int_enc("unsigned char", 1, 0, 3);
        let u8_t = b.int("unsigned char", 1);
        b.strukt("oldbits", 2, &[("d", u8_3, 0), ("e", u8_t, 4)]);
        b.build()
    }

    fn sample_btf() -> Btf {
        Btf::from_bytes(sample()).unwrap()
    }

    #[test]
    fn function_parameters() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let proto = |b: &mut Builder, params: u16| {
            let id = b.raw("", KIND_FUNC_PROTO, false, params, int);
            for _ in 0..params {
                b.word(0);
                b.word(int);
            }
            id
        };
        let three = proto(&mut b, 3);
        let one = proto(&mut b, 1);
        // A name that starts with another is not that one.
        b.raw("ff", KIND_FUNC, false, 1, one);
        b.raw("f", KIND_FUNC, false, 1, three);
        // A later function with the same name is ignored.
        b.raw("f", KIND_FUNC, false, 1, one);
        // Not a prototype, or out of range: no count.
        b.raw("g", KIND_FUNC, false, 1, int);
        b.raw("h", KIND_FUNC, false, 1, 999);
        b.strukt("s", 4, &[("a", int, 0)]);
        let btf = Btf::from_bytes(b.build()).unwrap();
        assert_eq!(btf.func_param_count("f"), Some(3));
        assert_eq!(btf.func_param_count("ff"), Some(1));
        assert_eq!(btf.func_param_count("f\0"), None);
        assert_eq!(btf.func_param_count("g"), None);
        assert_eq!(btf.func_param_count("h"), None);
        assert_eq!(btf.func_param_count("int"), None);
        assert_eq!(btf.func_param_count("s"), None);
        assert_eq!(btf.func_param_count("nope"), None);
        assert_eq!(btf.member_offset("s", "a").unwrap(), 0);
    }

    #[test]
    fn plain_member() {
        let btf = sample_btf();
        assert_eq!(btf.member_offset("plain", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("plain", "b").unwrap(), 4);
        assert_eq!(btf.member_offset("plain", "c").unwrap(), 8);
        // The union and the later struct of the same name are not used.
        assert!(matches!(
            btf.member_offset("plain", "zzz"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("plain", "late"),
            Err(BtfError::NoMember { .. })
        ));
    }

    #[test]
    fn struct_sizes() {
        let btf = sample_btf();
        assert!(btf.struct_size("plain").unwrap() >= 12);
        assert!(matches!(
            btf.struct_size("nope"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn anonymous_members() {
        let btf = sample_btf();
        assert_eq!(btf.member_offset("sock_common", "first").unwrap(), 0);
        assert_eq!(btf.member_offset("sock_common", "pad").unwrap(), 8);
        assert_eq!(btf.member_offset("sock_common", "skc_daddr").unwrap(), 12);
        assert_eq!(btf.member_offset("sock_common", "lo").unwrap(), 12);
        assert_eq!(btf.member_offset("sock_common", "skc_port").unwrap(), 14);
    }

    #[test]
    fn dotted_path() {
        let btf = sample_btf();
        assert_eq!(btf.member_offset("net", "ns").unwrap(), 8);
        assert_eq!(btf.member_offset("net", "ns.stash").unwrap(), 8);
        assert_eq!(btf.member_offset("net", "ns.inum").unwrap(), 16);
        assert_eq!(btf.member_offset("ns_common", "inum").unwrap(), 8);
        let err = btf.member_offset("net", "x.y").unwrap_err();
        assert!(matches!(err, BtfError::NotComposite { ref member, .. } if member == "x"));
        let err = btf.member_offset("net", "ns.nope").unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel BTF: struct \"net\" has no member \"ns.nope\""
        );
        for bad in ["", ".", "ns.", ".ns", "ns..inum"] {
            assert!(
                matches!(
                    btf.member_offset("net", bad),
                    Err(BtfError::NoMember { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bitfields() {
        let btf = sample_btf();
        for m in ["a", "b"] {
            let err = btf.member_offset("bits", m).unwrap_err();
            assert!(matches!(err, BtfError::Bitfield { .. }), "{m}: {err}");
        }
        assert_eq!(btf.member_offset("bits", "c").unwrap(), 4);
        let err = btf.member_offset("oldbits", "d").unwrap_err();
        assert!(matches!(err, BtfError::Bitfield { .. }), "{err}");
        let err = btf.member_offset("oldbits", "e").unwrap_err();
        assert!(
            matches!(err, BtfError::Unaligned { bit_offset: 4, .. }),
            "{err}"
        );
        assert_eq!(
            btf.member_offset("bits", "a").unwrap_err().to_string(),
            "kernel BTF: member \"a\" of struct \"bits\" is a bitfield"
        );
    }

    #[test]
    fn missing_struct_and_member() {
        let btf = sample_btf();
        let err = btf.member_offset("tcp_sock", "srtt_us").unwrap_err();
        assert!(matches!(err, BtfError::NoStruct(_)));
        assert_eq!(err.to_string(), "kernel BTF has no struct \"tcp_sock\"");
        let err = btf.member_offset("plain", "srtt_us").unwrap_err();
        assert!(matches!(err, BtfError::NoMember { .. }));
        assert_eq!(
            err.to_string(),
            "kernel BTF: struct \"plain\" has no member \"srtt_us\""
        );
        // Unions are not structs.
        let mut b = Builder::new();
        let u = b.int("int", 4);
        b.composite(KIND_UNION, "only_union", 4, false, &[("a", u, 0)]);
        let btf = Btf::from_bytes(b.build()).unwrap();
        assert!(matches!(
            btf.member_offset("only_union", "a"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn empty_type_section() {
        let btf = Btf::from_bytes(Builder::new().build()).unwrap();
        assert!(matches!(
            btf.member_offset("x", "y"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn io_error() {
        let err = Btf::from_file(Path::new("/nonexistent/btf/vmlinux")).unwrap_err();
        assert!(matches!(err, BtfError::Io { .. }));
        assert!(
            err.to_string().contains("/nonexistent/btf/vmlinux"),
            "{err}"
        );
    }

    #[test]
    fn header_errors() {
        let good = sample();
        let malformed =
            |data: Vec<u8>| matches!(Btf::from_bytes(data), Err(BtfError::Malformed(_)));
        assert!(malformed(Vec::new()));
        assert!(malformed(vec![0x9f]));
        assert!(malformed(vec![0u8; 64]));
        // Big-endian magic.
        let mut be = good.clone();
        be[0] = 0xeb;
        be[1] = 0x9f;
        assert!(malformed(be));
        let mut ver = good.clone();
        ver[2] = 2;
        assert!(malformed(ver));
        // hdr_len too small / too large.
        for hdr_len in [0u32, 23, u32::MAX] {
            let mut d = good.clone();
            d[4..8].copy_from_slice(&hdr_len.to_le_bytes());
            assert!(malformed(d), "hdr_len {hdr_len}");
        }
        // Section offsets/lengths that overflow or point past the end.
        for (field, v) in [
            (8, u32::MAX),
            (12, u32::MAX),
            (16, u32::MAX),
            (20, u32::MAX),
        ] {
            let mut d = good.clone();
            d[field..field + 4].copy_from_slice(&v.to_le_bytes());
            assert!(malformed(d), "field {field}");
        }
        // Unknown kind.
        let mut b = Builder::new();
        b.raw("x", 31, false, 0, 0);
        assert!(malformed(b.build()));
    }

    #[test]
    fn truncated_blobs() {
        let good = sample();
        for len in 0..good.len() {
            let r = Btf::from_bytes(good[..len].to_vec());
            assert!(
                matches!(r, Err(BtfError::Malformed(_))),
                "truncated to {len}: {r:?}"
            );
        }
    }

    /// Corrupt the blob in many ways; parsing and lookups may fail but must
    /// never panic (or recurse without bound).
    #[test]
    fn garbage_never_panics() {
        let good = sample();
        let lookups = [
            ("plain", "b"),
            ("sock_common", "skc_port"),
            ("net", "ns.inum"),
            ("bits", "c"),
            ("oldbits", "e"),
        ];
        let probe = |data: Vec<u8>| {
            if let Ok(btf) = Btf::from_bytes(data) {
                for (s, m) in lookups {
                    let _ = btf.member_offset(s, m);
                }
            }
        };
        let mut state: u64 = 0x1234_5678_9abc_def0;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for pos in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff, (rand() & 0xff) as u8] {
                let mut d = good.clone();
                d[pos] = v;
                probe(d);
            }
        }
        for _ in 0..2000 {
            let mut d = good.clone();
            for _ in 0..(rand() % 8 + 1) {
                let pos = (rand() as usize) % d.len();
                d[pos] = rand() as u8;
            }
            probe(d);
        }
        for len in [0usize, 1, 7, 24, 100, 1000] {
            let d: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            probe(d);
            let mut d2: Vec<u8> = (0..len.max(24)).map(|_| rand() as u8).collect();
            d2[0..4].copy_from_slice(&[0x9f, 0xeb, 1, 0]);
            probe(d2);
        }
    }

    #[test]
    fn cycles_are_malformed() {
        // Typedef cycle: typedef 2 -> 3 -> 2; struct s { t2 x; } and "x.y".
        let mut b = Builder::new();
        let u = b.int("int", 4); // 1
        let t1 = b.modifier(KIND_TYPEDEF, "a", 3); // 2
        b.modifier(KIND_TYPEDEF, "b", t1); // 3
        b.strukt("s", 4, &[("x", t1, 0), ("y", u, 0)]);
        let btf = Btf::from_bytes(b.build()).unwrap();
        assert!(matches!(
            btf.member_offset("s", "x.y"),
            Err(BtfError::Malformed(_))
        ));
        assert_eq!(btf.member_offset("s", "y").unwrap(), 0);

        // Struct containing itself as an anonymous member.
        let mut b = Builder::new();
        b.int("int", 4); // 1
        b.strukt("self_ref", 4, &[("", 2, 0)]); // 2
        let btf = Btf::from_bytes(b.build()).unwrap();
        assert!(matches!(
            btf.member_offset("self_ref", "nope"),
            Err(BtfError::Malformed(_))
        ));

        // Member referencing a type id past the end.
        let mut b = Builder::new();
        b.strukt("dangling", 4, &[("", 99, 0)]);
        let btf = Btf::from_bytes(b.build()).unwrap();
        assert!(matches!(
            btf.member_offset("dangling", "x"),
            Err(BtfError::Malformed(_))
        ));
    }

    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

    fn vmlinux() -> Option<Btf> {
        let path = Path::new(VMLINUX);
        if !path.exists() {
            println!("skipping: {VMLINUX} not present (kernel without CONFIG_DEBUG_INFO_BTF?)");
            return None;
        }
        let data = std::fs::read(path).unwrap();
        let len = data.len();
        let start = std::time::Instant::now();
        let btf = Btf::from_bytes(data).unwrap();
        println!(
            "parsed {len} bytes of {VMLINUX} in {:?}: {btf:?}",
            start.elapsed()
        );
        Some(btf)
    }

    #[test]
    fn real_vmlinux() {
        let Some(btf) = vmlinux() else { return };
        let off = |s: &str, m: &str| {
            let start = std::time::Instant::now();
            let o = btf
                .member_offset(s, m)
                .unwrap_or_else(|e| panic!("{s}.{m}: {e}"));
            println!("{s}.{m} = {o} (lookup {:?})", start.elapsed());
            o
        };
        assert_eq!(off("sock_common", "skc_daddr"), 0);
        assert_eq!(off("sock_common", "skc_rcv_saddr"), 4);
        // A sock holds its sock_common and the fields read through it; a
        // tcp_sock's counters lie past its end.
        let sock = btf.struct_size("sock").unwrap();
        assert!(sock > off("sock", "sk_protocol") + 1, "{sock}");
        assert!(sock > off("sock_common", "skc_flags") + 7, "{sock}");
        assert!(sock <= off("tcp_sock", "srtt_us"), "{sock}");
        assert!(btf.struct_size("sock_common").unwrap() < sock);
        assert!(matches!(
            btf.struct_size("no_such_struct_xyz"),
            Err(BtfError::NoStruct(_))
        ));
        for (s, m) in [
            ("sock_common", "skc_dport"),
            ("sock_common", "skc_num"),
            ("sock_common", "skc_family"),
            ("sock_common", "skc_v6_daddr"),
            ("sock_common", "skc_v6_rcv_saddr"),
            ("tcp_sock", "srtt_us"),
            ("tcp_sock", "segs_in"),
            ("tcp_sock", "bytes_received"),
            ("task_struct", "comm"),
            ("task_struct", "tgid"),
            ("net", "ns.inum"),
        ] {
            let o = off(s, m);
            assert!(o > 0 && o < 8192, "{s}.{m} = {o}");
        }
        // skc_dport and skc_num share a 32-bit word (skc_portpair).
        assert_eq!(
            off("sock_common", "skc_num"),
            off("sock_common", "skc_dport") + 2
        );
        let err = btf.member_offset("sock", "sk_no_such_member").unwrap_err();
        assert!(matches!(err, BtfError::NoMember { .. }));
        let err = btf.member_offset("no_such_struct_xyz", "a").unwrap_err();
        assert!(matches!(err, BtfError::NoStruct(_)));
    }

    #[test]
    fn real_vmlinux_bitfield() {
        let Some(btf) = vmlinux() else { return };
        // `unsigned char skc_reuse:4;` has been a bitfield in sock_common for ages.
        let err = btf.member_offset("sock_common", "skc_reuse").unwrap_err();
        assert!(matches!(err, BtfError::Bitfield { .. }), "{err}");
        println!("{err}");
    }
}
