//! Just enough of ELF64 to find an object's entry sites: section headers, symbol tables
//! and the build-id note. Everything read is untrusted: every offset and size is checked
//! against the file, and a malformed file is an error, never a panic.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// `e_machine` values we know the entry layouts of.
pub(crate) const EM_X86_64: u16 = 62;
pub(crate) const EM_AARCH64: u16 = 183;

const SHT_SYMTAB: u32 = 2;
const SHT_NOTE: u32 = 7;
const SHT_DYNSYM: u32 = 11;
const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;
const STB_LOCAL: u8 = 0;
const NT_GNU_BUILD_ID: u32 = 3;

/// Limits on what we read, so that a corrupt header cannot make us allocate gigabytes.
const MAX_SECTIONS: usize = 1 << 16;
const MAX_TABLE: u64 = 256 << 20;

/// Why a file could not be read as the object we expect.
#[derive(Debug)]
pub(crate) enum ElfError {
    Io(std::io::Error),
    /// Not an ELF64 little-endian file, or an out-of-range header field.
    Malformed(&'static str),
}

impl std::fmt::Display for ElfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElfError::Io(e) => write!(f, "{e}"),
            ElfError::Malformed(what) => write!(f, "malformed ELF file: {what}"),
        }
    }
}

impl From<std::io::Error> for ElfError {
    fn from(e: std::io::Error) -> Self {
        ElfError::Io(e)
    }
}

/// One section header (the fields we use).
#[derive(Clone, Debug)]
pub(crate) struct Section {
    pub(crate) name: String,
    pub(crate) kind: u32,
    pub(crate) addr: u64,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) link: u32,
}

/// A function symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FuncSym {
    pub(crate) name: String,
    /// Link-time address.
    pub(crate) value: u64,
    pub(crate) local: bool,
}

/// An ELF file opened for reading its sections.
pub(crate) struct ElfFile {
    file: File,
    len: u64,
    pub(crate) machine: u16,
    pub(crate) sections: Vec<Section>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The NUL-terminated string at `at` of a string table, if it is one.
fn str_at(table: &[u8], at: usize) -> Option<&str> {
    let rest = table.get(at..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

impl ElfFile {
    /// Open `path` and read its section headers.
    pub(crate) fn open(path: &std::path::Path) -> Result<Self, ElfError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut ehdr = [0u8; 64];
        file.read_exact_at(&mut ehdr, 0)?;
        if &ehdr[..4] != b"\x7fELF" {
            return Err(ElfError::Malformed("no ELF magic"));
        }
        if ehdr[4] != 2 || ehdr[5] != 1 {
            return Err(ElfError::Malformed("not a 64-bit little-endian object"));
        }
        let machine = u16_at(&ehdr, 18);
        let shoff = u64_at(&ehdr, 40);
        let shentsize = usize::from(u16_at(&ehdr, 58));
        let shnum = usize::from(u16_at(&ehdr, 60));
        let shstrndx = usize::from(u16_at(&ehdr, 62));
        if shoff == 0 || shnum == 0 {
            return Err(ElfError::Malformed("no section headers (stripped of them)"));
        }
        if shentsize < 64 || shnum > MAX_SECTIONS || shstrndx >= shnum {
            return Err(ElfError::Malformed("section header table"));
        }
        let table_len = (shentsize * shnum) as u64;
        if shoff.checked_add(table_len).is_none_or(|end| end > len) {
            return Err(ElfError::Malformed(
                "section headers beyond the end of the file",
            ));
        }
        let mut raw = vec![0u8; shentsize * shnum];
        file.read_exact_at(&mut raw, shoff)?;
        let mut elf = ElfFile {
            file,
            len,
            machine,
            sections: Vec::with_capacity(shnum),
        };
        let mut names = Vec::with_capacity(shnum);
        for i in 0..shnum {
            let h = &raw[i * shentsize..(i + 1) * shentsize];
            names.push(u32_at(h, 0) as usize);
            elf.sections.push(Section {
                name: String::new(),
                kind: u32_at(h, 4),
                addr: u64_at(h, 16),
                offset: u64_at(h, 24),
                size: u64_at(h, 32),
                link: u32_at(h, 40),
            });
        }
        let shstr = elf.read_section(&elf.sections[shstrndx].clone())?;
        for (s, n) in elf.sections.iter_mut().zip(names) {
            s.name = str_at(&shstr, n).unwrap_or("").to_owned();
        }
        Ok(elf)
    }

    /// The contents of a section (none for `SHT_NOBITS`-like sections of size 0).
    pub(crate) fn read_section(&self, s: &Section) -> Result<Vec<u8>, ElfError> {
        if s.size > MAX_TABLE {
            return Err(ElfError::Malformed("section too large"));
        }
        if s.offset
            .checked_add(s.size)
            .is_none_or(|end| end > self.len)
        {
            return Err(ElfError::Malformed("section beyond the end of the file"));
        }
        let mut buf = vec![0u8; s.size as usize];
        self.file.read_exact_at(&mut buf, s.offset)?;
        Ok(buf)
    }

    /// The first section named `name`.
    pub(crate) fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The function symbols of `.symtab` when the file has one, else of `.dynsym`, and
    /// which table they came from. Symbols without a name or an address are skipped.
    pub(crate) fn functions(&self) -> Result<(Vec<FuncSym>, &'static str), ElfError> {
        for (kind, which) in [(SHT_SYMTAB, ".symtab"), (SHT_DYNSYM, ".dynsym")] {
            let Some(tab) = self.sections.iter().find(|s| s.kind == kind) else {
                continue;
            };
            let strtab = self
                .sections
                .get(tab.link as usize)
                .ok_or(ElfError::Malformed("symbol table without a string table"))?
                .clone();
            let syms = self.read_section(tab)?;
            let strs = self.read_section(&strtab)?;
            let mut out = Vec::new();
            for raw in syms.chunks_exact(24) {
                let info = raw[4];
                let (kind, bind) = (info & 0xf, info >> 4);
                let shndx = u16_at(raw, 6);
                let value = u64_at(raw, 8);
                if (kind != STT_FUNC && kind != STT_GNU_IFUNC) || shndx == 0 || value == 0 {
                    continue;
                }
                let Some(name) = str_at(&strs, u32_at(raw, 0) as usize) else {
                    continue;
                };
                if name.is_empty() {
                    continue;
                }
                out.push(FuncSym {
                    name: name.to_owned(),
                    value,
                    local: bind == STB_LOCAL,
                });
            }
            return Ok((out, which));
        }
        Ok((Vec::new(), "no symbol table"))
    }

    /// The `NT_GNU_BUILD_ID` of the file, from its note sections.
    pub(crate) fn build_id(&self) -> Result<Option<Vec<u8>>, ElfError> {
        for s in self.sections.iter().filter(|s| s.kind == SHT_NOTE) {
            let notes = self.read_section(s)?;
            if let Some(id) = build_id_in_notes(&notes) {
                return Ok(Some(id.to_vec()));
            }
        }
        Ok(None)
    }
}

/// The GNU build-id in a run of ELF notes (a note section, or a `PT_NOTE` segment).
pub(crate) fn build_id_in_notes(notes: &[u8]) -> Option<&[u8]> {
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let namesz = u32_at(notes, at) as usize;
        let descsz = u32_at(notes, at + 4) as usize;
        let kind = u32_at(notes, at + 8);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(namesz.checked_next_multiple_of(4)?)?;
        let end = desc_at.checked_add(descsz.checked_next_multiple_of(4)?)?;
        if end > notes.len() || desc_at + descsz > notes.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz)? == b"GNU\0" {
            return Some(&notes[desc_at..desc_at + descsz]);
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(name);
        v.resize(v.len().next_multiple_of(4), 0);
        v.extend_from_slice(desc);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn finds_the_build_id_among_notes() {
        let mut notes = note(b"GNU\0", 1, &[0, 0, 0, 0, 3, 2, 0, 0]);
        notes.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &[0xab; 20]));
        assert_eq!(build_id_in_notes(&notes), Some(&[0xab; 20][..]));
        assert_eq!(build_id_in_notes(&notes[..notes.len() - 4]), None);
        assert_eq!(build_id_in_notes(&note(b"XYZ\0", 3, &[1; 20])), None);
        assert_eq!(build_id_in_notes(&[]), None);
        // A size that overflows is malformed, not a panic.
        let mut bad = note(b"GNU\0", 3, &[1; 4]);
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(build_id_in_notes(&bad), None);
    }

    #[test]
    fn refuses_what_is_not_an_elf64_file() {
        let dir = std::env::temp_dir().join(format!("klp-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("not-elf");
        std::fs::write(&p, b"#!/bin/sh\necho hello\n").unwrap();
        assert!(matches!(
            ElfFile::open(&p),
            Err(ElfError::Io(_) | ElfError::Malformed(_))
        ));
        let mut hdr = vec![0u8; 64];
        hdr[..4].copy_from_slice(b"\x7fELF");
        hdr[4] = 1; // 32-bit
        hdr[5] = 1;
        std::fs::write(&p, &hdr).unwrap();
        assert!(matches!(ElfFile::open(&p), Err(ElfError::Malformed(_))));
        hdr[4] = 2;
        std::fs::write(&p, &hdr).unwrap();
        assert!(matches!(
            ElfFile::open(&p),
            Err(ElfError::Malformed("no section headers (stripped of them)"))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_our_own_executable() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let elf = ElfFile::open(&exe).unwrap();
        assert_eq!(
            elf.machine,
            if cfg!(target_arch = "x86_64") {
                EM_X86_64
            } else {
                EM_AARCH64
            }
        );
        assert!(elf.section(".text").is_some());
        let (funcs, _) = elf.functions().unwrap();
        assert!(
            funcs
                .iter()
                .any(|f| f.name.contains("reads_our_own_executable"))
        );
    }
}
