//! Text formatted into a fixed buffer: the guests have no heap, so a console line or a store
//! path is built in an array on the stack (`write!(text, …)`), cut short if it does not fit.

use core::fmt::{self, Write};

/// Up to `N` bytes of UTF-8 text.
pub struct Text<const N: usize> {
    bytes: [u8; N],
    length: usize,
}

impl<const N: usize> Text<N> {
    pub const fn new() -> Text<N> {
        Text {
            bytes: [0; N],
            length: 0,
        }
    }

    /// The text formatted from `args` (see [`crate::text!`]).
    pub fn from_args(args: fmt::Arguments) -> Text<N> {
        let mut text = Text::new();
        let _ = text.write_fmt(args);
        text
    }

    pub fn as_str(&self) -> &str {
        // Only whole `str`s are copied in, cut at a character boundary.
        core::str::from_utf8(&self.bytes[..self.length]).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.length]
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Text<N> {
        Text::new()
    }
}

impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = N - self.length;
        let mut taken = text.len().min(room);
        // Never split a character: the buffer stays valid UTF-8.
        while !text.is_char_boundary(taken) {
            taken -= 1;
        }
        self.bytes[self.length..self.length + taken].copy_from_slice(&text.as_bytes()[..taken]);
        self.length += taken;
        Ok(())
    }
}

/// `text!(N, "…", args)`: a [`Text<N>`] formatted like `format!`.
#[macro_export]
macro_rules! text {
    ($size:literal, $($arg:tt)*) => {
        $crate::text::Text::<$size>::from_args(format_args!($($arg)*))
    };
}
