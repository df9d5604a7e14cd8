//! A guest's symbols: which function an address is in, and where a named symbol is.
//!
//! Read from the guest's ELF symbol table with the `object` crate; names are demangled
//! with `rustc-demangle` and written without the hash (`traplab_guests::traps::exception_entries`).

use object::{Object, ObjectSymbol, SymbolKind};
use std::path::Path;

/// One function or object in the ELF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub address: u64,
    pub size: u64,
}

/// The symbols of one ELF, sorted by address.
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    symbols: Vec<Symbol>,
}

#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path} is not an ELF file we can read: {error}")]
    Elf { path: String, error: object::Error },
}

impl Symbols {
    pub fn load(path: &Path) -> Result<Symbols, SymbolError> {
        let data = std::fs::read(path).map_err(|error| SymbolError::Io {
            path: path.display().to_string(),
            error,
        })?;
        Symbols::parse(&data).map_err(|error| SymbolError::Elf {
            path: path.display().to_string(),
            error,
        })
    }

    pub fn parse(data: &[u8]) -> Result<Symbols, object::Error> {
        use object::ObjectSection;
        let file = object::File::parse(data)?;
        let mut symbols: Vec<(Symbol, Option<u64>)> = file
            .symbols()
            // Untyped symbols too: labels of hand-written assembly (the 32-bit guests' stubs).
            .filter(|symbol| {
                matches!(
                    symbol.kind(),
                    SymbolKind::Text | SymbolKind::Data | SymbolKind::Unknown
                ) && symbol.address() != 0
                    && symbol.section_index().is_some()
            })
            .filter_map(|symbol| {
                let name = symbol.name().ok()?;
                // Where its section ends: the most a label without a size can cover.
                let section_end = symbol
                    .section_index()
                    .and_then(|index| file.section_by_index(index).ok())
                    // (Saturating: an ELF is input, and a corrupt one may say anything.)
                    .map(|section| section.address().saturating_add(section.size()));
                Some((
                    Symbol {
                        name: format!("{:#}", rustc_demangle::demangle(name)),
                        address: symbol.address(),
                        size: symbol.size(),
                    },
                    section_end,
                ))
            })
            .collect();
        symbols.sort_by_key(|(symbol, _)| symbol.address);
        // A label of hand-written assembly has no size: it covers the code up to the next
        // symbol's address (or its section's end), as gdb takes it, not its first byte only.
        let starts: Vec<u64> = symbols.iter().map(|(symbol, _)| symbol.address).collect();
        let symbols = symbols
            .into_iter()
            .map(|(mut symbol, section_end)| {
                if symbol.size == 0 {
                    let next = starts[starts.partition_point(|&start| start <= symbol.address)..]
                        .first()
                        .copied();
                    let end = match (next, section_end) {
                        (Some(next), Some(end)) => next.min(end),
                        (next, end) => next.or(end).unwrap_or(symbol.address.saturating_add(1)),
                    };
                    symbol.size = end.saturating_sub(symbol.address).max(1);
                }
                symbol
            })
            .collect();
        Ok(Symbols { symbols })
    }

    /// Every symbol, in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Symbol> {
        self.symbols.iter()
    }

    /// The symbol `address` is in, and the offset into it.
    pub fn lookup(&self, address: u64) -> Option<(&Symbol, u64)> {
        let index = self
            .symbols
            .partition_point(|symbol| symbol.address <= address);
        let symbol = self.symbols[..index].last()?;
        let offset = address - symbol.address;
        (offset < symbol.size.max(1)).then_some((symbol, offset))
    }

    /// `name+0x10`, or `None` outside every symbol.
    pub fn describe(&self, address: u64) -> Option<String> {
        let (symbol, offset) = self.lookup(address)?;
        Some(if offset == 0 {
            symbol.name.clone()
        } else {
            format!("{}+{offset:#x}", symbol.name)
        })
    }

    /// The address of the symbol called `name` (demangled, without hash).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.symbols
            .iter()
            .find(|symbol| symbol.name == name)
            .map(|symbol| symbol.address)
    }

    /// The symbol a student names: its full demangled name (`page_fault::page_fault`), or
    /// its last part (`page_fault`) when that names one; the first, in address order, of
    /// several.
    pub fn find(&self, name: &str) -> Option<&Symbol> {
        let name = name.trim();
        self.symbols
            .iter()
            .find(|symbol| symbol.name == name)
            .or_else(|| {
                self.symbols
                    .iter()
                    .find(|symbol| symbol.name.rsplit("::").next() == Some(name))
            })
    }

    /// Resolve `name` or `name+offset` (offset in hex with 0x, or decimal).
    pub fn resolve(&self, expression: &str) -> Option<u64> {
        let (name, offset) = match expression.rsplit_once('+') {
            Some((name, offset)) => (name, traplab_abi::event::hex::parse(offset)?),
            None => (expression, 0),
        };
        Some(self.address_of(name.trim())? + offset)
    }
}
