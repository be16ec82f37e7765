//! Finding the entry sites of the loaded objects, with no registration code.
//!
//! For each object `dl_iterate_phdr` reports (the main program, then the shared objects),
//! the file is opened (the main program through `/proc/self/exe`) and checked to be the
//! one that is mapped: its build-id against the `PT_NOTE` in memory, and its
//! `__patchable_function_entries` table against the table in memory (which the loader
//! has relocated). Each entry of the table in memory is then matched to the function
//! symbols of the file (`.symtab`, or `.dynsym` when the file is stripped): with the
//! 16,14 convention an entry points 14 bytes before its function. Every entry must lie
//! in an executable segment of its object; the bytes at the entry are copied and
//! validated against the convention ([`super::protocol::validate_site`]): a site that
//! does not match is listed with the reason, and refused when a patch names it.
//!
//! # Object names
//!
//! The main program is `vmlinux` (name `None`). A shared object is named by its file
//! name up to its first `.so`: `libfoo.so.1.2` is `libfoo`, as a kernel module is named
//! without its `.ko`. A patch's `klp_object.name` uses that name.
//!
//! # `old_sympos`
//!
//! Functions of one name in one object (static functions of several files) are numbered
//! 1, 2, … in address order, as kallsyms numbers them; a unique name is position 0 or 1.

use std::ffi::{CStr, c_int, c_void};
use std::path::PathBuf;

use super::elf::{EM_AARCH64, EM_X86_64, ElfError, ElfFile, build_id_in_notes};
use super::protocol::{BadSite, Convention, EntryShape, validate_site};

/// The section both compilers record entry sites in.
pub const SECTION: &str = "__patchable_function_entries";
/// The convention sites are validated against (`-fpatchable-function-entry=16,14`).
pub const CONVENTION: Convention = Convention::Pfe16_14;
/// Bytes of the entry area before the function.
pub const PREFIX: usize = CONVENTION.prefix_len();
/// Bytes read at each site for its validation (prefix, `endbr64`, entry, and the start of
/// the body).
pub const AREA: usize = CONVENTION.read_len();

/// An object mapped in this process, as the dynamic loader reports it.
#[derive(Clone, Debug)]
pub struct LoadedObject {
    /// The object's name for patches: `None` for the main program.
    pub name: Option<String>,
    /// The file the loader mapped.
    pub path: PathBuf,
    /// The load bias: run-time address minus link-time address.
    pub bias: usize,
    /// The build-id of the mapped object (from its `PT_NOTE` segments in memory).
    pub build_id: Option<Vec<u8>>,
    /// Executable segments, as run-time `[start, end)` ranges.
    pub exec: Vec<(usize, usize)>,
    /// Readable segments, as run-time `[start, end)` ranges.
    pub readable: Vec<(usize, usize)>,
}

/// One entry site: a function of an object built with the flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrySite {
    /// The object's name (`None`: the main program).
    pub object: Option<String>,
    /// The function's name.
    pub name: String,
    /// `old_sympos` among the functions of this name in the object (see the module
    /// documentation); 1 when the name is unique.
    pub sympos: u64,
    /// Whether the symbol is local (a `static` function).
    pub local: bool,
    /// The function's address.
    pub func: usize,
    /// The address the table records: the start of the entry area.
    pub area: usize,
    /// The bytes of the entry area as found (`AREA` bytes from `area`).
    pub bytes: [u8; AREA],
    /// The site's shape, or why it cannot be armed (checked again before anything is
    /// written).
    pub shape: Result<EntryShape, BadSite>,
}

/// Why the sites of an object could not be listed.
#[derive(Debug)]
pub enum DiscoverError {
    /// The file could not be read.
    Unreadable {
        /// The object's file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file on disk is not the one that is mapped (replaced since it was loaded).
    Replaced {
        /// The object's file.
        path: PathBuf,
    },
    /// The file has no symbol table: sites cannot be named.
    NoSymbols {
        /// The object's file.
        path: PathBuf,
    },
    /// The table holds an address outside the object's code (a corrupt table).
    BadEntry {
        /// The object's file.
        path: PathBuf,
        /// The address found.
        addr: usize,
    },
}

impl std::fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscoverError::Unreadable { path, reason } => {
                write!(f, "cannot read '{}': {reason}", path.display())
            }
            DiscoverError::Replaced { path } => write!(
                f,
                "'{}' on disk is not the object that is loaded (replaced since it was loaded)",
                path.display()
            ),
            DiscoverError::NoSymbols { path } => write!(
                f,
                "'{}' has no symbol table: its entry sites cannot be named",
                path.display()
            ),
            DiscoverError::BadEntry { path, addr } => write!(
                f,
                "'{}': entry site table holds {addr:#x}, outside the object's code",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DiscoverError {}

/// The name a patch uses for a shared object at `path` (see the module documentation).
pub fn object_name(path: &std::path::Path) -> String {
    let file = path.file_name().map_or_else(
        || path.to_string_lossy().into_owned(),
        |f| f.to_string_lossy().into_owned(),
    );
    match file.find(".so") {
        Some(i) if i > 0 => file[..i].to_owned(),
        _ => file,
    }
}

/// The objects mapped now, the main program first. Takes the loader's lock: not for
/// signal handlers.
pub fn loaded_objects() -> Vec<LoadedObject> {
    let mut out: Vec<LoadedObject> = Vec::new();
    // SAFETY: the callback only reads what the loader hands it, for the duration of the
    // call, and `out` outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(each_object), (&raw mut out).cast::<c_void>());
    }
    out
}

/// `dl_iterate_phdr`'s callback: one object.
unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `Vec` passed by `loaded_objects`, used by this thread only;
    // `info` is valid for the call (the loader's contract).
    let (out, info) = unsafe { (&mut *data.cast::<Vec<LoadedObject>>(), &*info) };
    let first = out.is_empty();
    let name = if info.dlpi_name.is_null() {
        ""
    } else {
        // SAFETY: a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_str()
            .unwrap_or("")
    };
    // The main program comes first, with an empty name; the vDSO has a name but no file.
    let (obj_name, path) = if first && name.is_empty() {
        (None, PathBuf::from("/proc/self/exe"))
    } else if name.is_empty() || !name.starts_with('/') && !std::path::Path::new(name).exists() {
        return 0;
    } else {
        let p = PathBuf::from(name);
        (Some(object_name(&p)), p)
    };
    let bias = info.dlpi_addr as usize;
    let mut obj = LoadedObject {
        name: obj_name,
        path,
        bias,
        build_id: None,
        exec: Vec::new(),
        readable: Vec::new(),
    };
    let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: the loader's program headers, `dlpi_phnum` of them.
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    for ph in phdrs {
        let start = bias.wrapping_add(ph.p_vaddr as usize);
        let end = start.wrapping_add(ph.p_memsz as usize);
        match ph.p_type {
            libc::PT_LOAD => {
                if ph.p_flags & libc::PF_R != 0 {
                    obj.readable.push((start, end));
                }
                if ph.p_flags & libc::PF_X != 0 {
                    obj.exec.push((start, end));
                }
            }
            libc::PT_NOTE if obj.build_id.is_none() => {
                // SAFETY: a PT_NOTE segment is mapped (inside a PT_LOAD) for the object's
                // lifetime, which covers this call.
                let notes = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
                obj.build_id = build_id_in_notes(notes).map(<[u8]>::to_vec);
            }
            _ => {}
        }
    }
    out.push(obj);
    0
}

fn within(ranges: &[(usize, usize)], start: usize, len: usize) -> bool {
    ranges
        .iter()
        .any(|&(lo, hi)| start >= lo && start.checked_add(len).is_some_and(|e| e <= hi))
}

/// The entry sites of `obj`, in address order (a function with several names appears
/// once per name). An object built without the flag has none.
pub fn sites_of(obj: &LoadedObject) -> Result<Vec<EntrySite>, DiscoverError> {
    let unreadable = |e: ElfError| DiscoverError::Unreadable {
        path: obj.path.clone(),
        reason: e.to_string(),
    };
    let elf = ElfFile::open(&obj.path).map_err(unreadable)?;
    let ours = if cfg!(target_arch = "aarch64") {
        EM_AARCH64
    } else {
        EM_X86_64
    };
    if elf.machine != ours {
        return Err(DiscoverError::Unreadable {
            path: obj.path.clone(),
            reason: format!("machine {} is not this process's", elf.machine),
        });
    }
    // The file must be the mapped object: a package upgrade replaces files under
    // running processes.
    let file_id = elf.build_id().map_err(unreadable)?;
    if file_id != obj.build_id {
        return Err(DiscoverError::Replaced {
            path: obj.path.clone(),
        });
    }
    let Some(section) = elf.section(SECTION).cloned() else {
        return Ok(Vec::new());
    };
    let in_file = elf.read_section(&section).map_err(unreadable)?;
    let start = obj.bias.wrapping_add(section.addr as usize);
    if section.size % 8 != 0 || !within(&obj.readable, start, section.size as usize) {
        return Err(DiscoverError::Replaced {
            path: obj.path.clone(),
        });
    }
    // SAFETY: the range lies in a readable segment of the object, mapped while the
    // caller holds it (the objects of a patch are pinned); the loader relocated it.
    let in_memory =
        unsafe { std::slice::from_raw_parts(start as *const u8, section.size as usize) };
    let (funcs, _) = elf.functions().map_err(unreadable)?;
    if funcs.is_empty() {
        return Err(DiscoverError::NoSymbols {
            path: obj.path.clone(),
        });
    }
    // Link-time function address -> symbols there.
    let mut by_addr: std::collections::BTreeMap<u64, Vec<&super::elf::FuncSym>> =
        std::collections::BTreeMap::new();
    for f in &funcs {
        by_addr.entry(f.value).or_default().push(f);
    }
    let mut sites = Vec::new();
    for (file_entry, mem_entry) in in_file.chunks_exact(8).zip(in_memory.chunks_exact(8)) {
        let link = u64::from_le_bytes(file_entry.try_into().expect("8 bytes"));
        let area = usize::from_le_bytes(mem_entry.try_into().expect("8 bytes"));
        // Files written by GNU ld carry the link-time address (also for RELATIVE
        // relocations): the table in memory must say the same, moved by the bias. A
        // zero in the file is an entry whose relocation holds the address instead.
        if link != 0 && obj.bias.wrapping_add(link as usize) != area {
            return Err(DiscoverError::Replaced {
                path: obj.path.clone(),
            });
        }
        if !within(&obj.exec, area, AREA) || !within(&obj.readable, area, AREA) {
            return Err(DiscoverError::BadEntry {
                path: obj.path.clone(),
                addr: area,
            });
        }
        let func = area + PREFIX;
        let Some(names) = by_addr.get(&(func.wrapping_sub(obj.bias) as u64)) else {
            // No symbol at the function: another layout, or an unnamed function.
            continue;
        };
        let mut bytes = [0u8; AREA];
        // SAFETY: checked above to lie in a readable segment of the object.
        bytes.copy_from_slice(unsafe { std::slice::from_raw_parts(area as *const u8, AREA) });
        let shape = validate_site(&bytes, CONVENTION);
        for sym in names {
            sites.push(EntrySite {
                object: obj.name.clone(),
                name: sym.name.clone(),
                sympos: 0,
                local: sym.local,
                func,
                area,
                bytes,
                shape: shape.clone(),
            });
        }
    }
    sites.sort_by(|a, b| a.func.cmp(&b.func).then_with(|| a.name.cmp(&b.name)));
    // kallsyms positions: among the same name, in address order.
    let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for s in &mut sites {
        let n = seen.entry(s.name.clone()).or_insert(0);
        *n += 1;
        s.sympos = *n;
    }
    Ok(sites)
}

/// The loaded object named `name` (`None`: the main program).
pub fn find_object(name: Option<&str>) -> Option<LoadedObject> {
    loaded_objects()
        .into_iter()
        .find(|o| o.name.as_deref() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_objects_like_modules() {
        assert_eq!(object_name("/lib/x86_64/libfoo.so.1.2".as_ref()), "libfoo");
        assert_eq!(object_name("libbar.so".as_ref()), "libbar");
        assert_eq!(object_name("plugin".as_ref()), "plugin");
        assert_eq!(object_name(".so".as_ref()), ".so");
    }

    #[test]
    fn the_main_program_comes_first() {
        let objs = loaded_objects();
        assert_eq!(objs[0].name, None);
        assert!(!objs[0].exec.is_empty());
        // The test binary is not built with the flag: no sites, and no error.
        assert_eq!(sites_of(&objs[0]).unwrap(), Vec::new());
        assert!(objs.iter().any(|o| o.name.as_deref() == Some("libc")));
    }
}
