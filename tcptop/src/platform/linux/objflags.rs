//! A map's flags, chosen per kernel and written into the eBPF object before
//! aya loads it (aya's loader sets a map's size from user space, not its
//! flags).
//!
//! The use: the UDP flows and TCP connection tables are not preallocated
//! on kernels whose hash maps allocate from the BPF memory allocator
//! (`struct bpf_mem_alloc`, Linux 6.1+). A preallocated table of
//! `--max-conns` entries (311,296 at 100,000 connections) is 55 MB (UDP)
//! and 70 MB (TCP) of kernel memory zeroed at start-up, for flows most
//! machines never have and records the lazy walk (`owners.rs`) no longer
//! makes for idle connections. Before 6.1 a table allocated at run time
//! in a tracing program makes the verifier print a kernel warning
//! (WARN_ONCE: a panic where panic_on_warn is set), so those kernels keep
//! preallocated tables (and the eager walks, which insert a record for
//! every connection: with those, run-time allocation only moved the cost
//! into the walk, measured).

use object::{Object, ObjectSection, ObjectSymbol};

/// `BPF_F_NO_PREALLOC`.
pub const NO_PREALLOC: u32 = 1;

/// `struct bpf_map_def` as aya-ebpf writes it in the `maps` section: type,
/// key size, value size, max entries, flags, id, pinning (u32 each).
const DEF_LEN: usize = 7 * 4;
const FLAGS_AT: usize = 4 * 4;

/// The eBPF object in memory of our own, 8-byte aligned as the ELF parsers
/// want it (the embedded one is read-only).
pub struct Patched {
    words: Vec<u64>,
    len: usize,
}

impl Patched {
    pub fn bytes(&self) -> &[u8] {
        let all = object::pod::bytes_of_slice(&self.words);
        all.get(..self.len).unwrap_or(all)
    }
}

/// A copy of `obj` in which each map of `maps` (`(name, key, value,
/// flags)`: a hash map with `key` and `value` byte sizes and no flags, as
/// built) has `flags` added: all of them, or an error (saying why the
/// object is not as expected) and none: the caller loads it unchanged.
pub fn with_maps_flags(obj: &[u8], maps: &[(&str, usize, usize, u32)]) -> Result<Patched, String> {
    let mut at_flags = Vec::with_capacity(maps.len());
    for &(name, key, value, flags) in maps {
        let at = def_offset(obj, name)?;
        let def = obj
            .get(at..at + DEF_LEN)
            .ok_or_else(|| format!("map {name}: its definition is outside the object"))?;
        let word = |i: usize| u32::from_le_bytes([def[i], def[i + 1], def[i + 2], def[i + 3]]);
        let want = [
            (0, 1u32, "type"),
            (4, key as u32, "key size"),
            (8, value as u32, "value size"),
            (FLAGS_AT, 0, "flags"),
        ];
        for (off, expected, what) in want {
            if word(off) != expected {
                return Err(format!(
                    "map {name}: {what} is {}, expected {expected}",
                    word(off)
                ));
            }
        }
        at_flags.push((at, flags));
    }
    let mut words = vec![0u64; obj.len().div_ceil(8)];
    let bytes = object::pod::bytes_of_slice_mut(&mut words);
    bytes[..obj.len()].copy_from_slice(obj);
    for (at, flags) in at_flags {
        bytes[at + FLAGS_AT..at + FLAGS_AT + 4].copy_from_slice(&flags.to_le_bytes());
    }
    Ok(Patched {
        words,
        len: obj.len(),
    })
}

/// Where in `obj` the definition of map `name` starts.
fn def_offset(obj: &[u8], name: &str) -> Result<usize, String> {
    let file = object::File::parse(obj).map_err(|e| format!("the eBPF object: {e}"))?;
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .ok_or_else(|| format!("no symbol {name} in the eBPF object"))?;
    let index = sym
        .section_index()
        .ok_or_else(|| format!("symbol {name} has no section"))?;
    let section = file
        .section_by_index(index)
        .map_err(|e| format!("symbol {name}: {e}"))?;
    if section.name() != Ok("maps") {
        return Err(format!("symbol {name} is not in the maps section"));
    }
    let (start, size) = section
        .file_range()
        .ok_or_else(|| format!("the maps section of {name} has no bytes"))?;
    // In a relocatable object a symbol's value is its offset in its section.
    let inside = sym.address();
    if inside.saturating_add(DEF_LEN as u64) > size {
        return Err(format!("map {name}: its definition is outside its section"));
    }
    usize::try_from(start + inside).map_err(|e| format!("map {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcptop_common::{ConnStats, ConnTuple, MAP_CONNS, MAP_UDP_FLOWS, UdpFlow};

    fn object() -> &'static [u8] {
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcptop"))
    }

    #[test]
    fn flags_written_where_aya_reads_them() {
        let key = std::mem::size_of::<ConnTuple>();
        let value = std::mem::size_of::<UdpFlow>();
        let conns = (
            MAP_CONNS,
            std::mem::size_of::<u64>(),
            std::mem::size_of::<ConnStats>(),
            NO_PREALLOC,
        );
        let p =
            with_maps_flags(object(), &[(MAP_UDP_FLOWS, key, value, NO_PREALLOC), conns]).unwrap();
        assert_eq!(p.bytes().len(), object().len());
        let obj = aya_obj::Object::parse(p.bytes()).unwrap();
        let unchanged = aya_obj::Object::parse(object()).unwrap();
        assert_eq!(unchanged.maps[MAP_UDP_FLOWS].map_flags(), 0);
        assert_eq!(unchanged.maps[MAP_CONNS].map_flags(), 0);
        // Parsed as aya parses it before loading: those maps, and only
        // they, have the flag added.
        assert_eq!(obj.maps.len(), unchanged.maps.len());
        for (name, map) in &obj.maps {
            let before = unchanged.maps[name].map_flags();
            let want = if name == MAP_UDP_FLOWS || name == MAP_CONNS {
                NO_PREALLOC
            } else {
                before
            };
            assert_eq!(map.map_flags(), want, "{name}");
        }
        assert_eq!(
            obj.maps[MAP_UDP_FLOWS].max_entries(),
            unchanged.maps[MAP_UDP_FLOWS].max_entries()
        );
    }

    #[test]
    fn an_unexpected_definition_is_left_alone() {
        let value = std::mem::size_of::<UdpFlow>();
        let key = std::mem::size_of::<ConnTuple>();
        // Wrong sizes: not the map we think it is.
        let one = |name, key, value| with_maps_flags(object(), &[(name, key, value, 1)]);
        let e = one(MAP_UDP_FLOWS, key + 1, value).err().unwrap();
        assert!(e.contains("key size"), "{e}");
        assert!(one("NO_SUCH_MAP", key, value).is_err());
        // A map that is not a hash of these sizes.
        assert!(one(MAP_CONNS, key, value).is_err());
        assert!(with_maps_flags(b"not an object", &[(MAP_UDP_FLOWS, key, value, 1)]).is_err());
        // One wrong among right ones: none patched.
        let good = (MAP_UDP_FLOWS, key, value, 1);
        assert!(with_maps_flags(object(), &[good, (MAP_CONNS, key, value, 1)]).is_err());
    }
}
