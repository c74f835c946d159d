//! Character encodings: strict decoding of native bytes, and GBK output that loses nothing.
//!
//! A document "not in its declared encoding is refused as a whole" (`formats.md`): decoding
//! never substitutes U+FFFD. GBK, GB2312 and CP936 are decoded as GBK (the WHATWG table, where
//! `A1A4` is `·` U+00B7 and 喆/堃 exist); GB18030 as GB18030. Writing GBK, a character outside
//! GBK (䶮) becomes an XML character reference (`&#x4DAE;`), which the receiving parser restores.

use encoding_rs::{DecoderResult, EncoderResult, Encoding, GB18030, GBK, UTF_8};

/// The encodings the gateway reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoding {
    Utf8,
    Gbk,
    Gb18030,
}

impl TextEncoding {
    /// The encoding a declared label means, if the gateway supports it.
    pub fn from_label(label: &str) -> Option<TextEncoding> {
        match label.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Some(TextEncoding::Utf8),
            "gbk" | "gb2312" | "cp936" | "x-gbk" | "gb_2312-80" => Some(TextEncoding::Gbk),
            "gb18030" => Some(TextEncoding::Gb18030),
            _ => None,
        }
    }

    /// The name written in an XML declaration.
    pub fn label(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "UTF-8",
            TextEncoding::Gbk => "GBK",
            TextEncoding::Gb18030 => "GB18030",
        }
    }

    fn encoding(self) -> &'static Encoding {
        match self {
            TextEncoding::Utf8 => UTF_8,
            TextEncoding::Gbk => GBK,
            TextEncoding::Gb18030 => GB18030,
        }
    }

    /// Decodes the whole of `bytes`, or says where the first invalid byte is.
    pub fn decode(self, bytes: &[u8]) -> Result<String, String> {
        if self == TextEncoding::Utf8 {
            let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            return String::from_utf8(bytes.to_vec()).map_err(|e| {
                let at = e.utf8_error().valid_up_to();
                format!("document is not valid UTF-8 (encoding): invalid byte 0x{:02x} at position {at}", bytes[at])
            });
        }
        let mut decoder = self.encoding().new_decoder_without_bom_handling();
        let mut out = String::with_capacity(bytes.len() * 3 / 2 + 16);
        let mut consumed = 0;
        loop {
            if let Some(max) =
                decoder.max_utf8_buffer_length_without_replacement(bytes.len() - consumed)
            {
                out.reserve(max);
            }
            let (result, read) =
                decoder.decode_to_string_without_replacement(&bytes[consumed..], &mut out, true);
            consumed += read;
            match result {
                DecoderResult::InputEmpty => return Ok(out),
                DecoderResult::OutputFull => continue,
                DecoderResult::Malformed(bad, extra) => {
                    let at = consumed.saturating_sub(usize::from(bad) + usize::from(extra));
                    return Err(format!(
                        "document is not valid {} (encoding): illegal byte sequence 0x{:02x} at position {at}",
                        self.label(),
                        bytes.get(at).copied().unwrap_or_default()
                    ));
                }
            }
        }
    }

    /// Encodes text, writing characters this encoding lacks as XML character references.
    pub fn encode_xml(self, text: &str) -> Vec<u8> {
        if self == TextEncoding::Utf8 {
            return text.as_bytes().to_vec();
        }
        let owned;
        let text = if self == TextEncoding::Gbk && text.chars().any(beyond_classic_gbk) {
            owned = text
                .chars()
                .map(|c| {
                    if beyond_classic_gbk(c) {
                        format!("&#x{:X};", u32::from(c))
                    } else {
                        c.to_string()
                    }
                })
                .collect::<String>();
            owned.as_str()
        } else {
            text
        };
        let mut encoder = self.encoding().new_encoder();
        let mut out = Vec::with_capacity(text.len() + 16);
        let mut rest = text;
        loop {
            if let Some(max) = encoder.max_buffer_length_from_utf8_without_replacement(rest.len()) {
                out.reserve(max);
            }
            let (result, read) =
                encoder.encode_from_utf8_to_vec_without_replacement(rest, &mut out, true);
            rest = &rest[read..];
            match result {
                EncoderResult::InputEmpty => return out,
                EncoderResult::OutputFull => continue,
                EncoderResult::Unmappable(ch) => {
                    out.extend_from_slice(format!("&#x{:X};", u32::from(ch)).as_bytes());
                }
            }
        }
    }
}

/// Characters that the WHATWG GBK table can encode but a classic GBK (CP936) system cannot
/// be relied on to read: CJK Extension A (GB18030-2005/2022 moved some from private use to
/// these, e.g. 䶮 U+4DAE at FE9F), vertical forms, private use and everything beyond the BMP.
/// The gateway writes them as character references, as `formats.md` asks.
fn beyond_classic_gbk(c: char) -> bool {
    matches!(u32::from(c), 0x3400..=0x4DBF | 0xE000..=0xF8FF | 0xFE10..=0xFE1F | 0x10000..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbk_nuances() {
        // A1A4 is the middle dot U+00B7 in GBK (a GB2312 decoder gives U+30FB).
        assert_eq!(TextEncoding::Gbk.decode(b"\xA1\xA4").unwrap(), "\u{00B7}");
        let encoded = TextEncoding::Gbk.encode_xml("刘䶮·喆堃");
        assert!(encoded.windows(8).any(|w| w == b"&#x4DAE;"), "{encoded:?}");
        assert!(encoded.windows(2).any(|w| w == b"\xA1\xA4"), "the middle dot is GBK A1A4");
        let back = TextEncoding::Gbk.decode(&encoded).unwrap();
        assert_eq!(back, "刘&#x4DAE;·喆堃");
    }

    #[test]
    fn invalid_bytes_are_refused_with_their_position() {
        let err = TextEncoding::Gbk.decode(b"<a>\xAD\xFF</a>").unwrap_err();
        assert!(err.starts_with("document is not valid GBK (encoding)"), "{err}");
        let err = TextEncoding::Utf8.decode(b"ab\xFF").unwrap_err();
        assert!(err.contains("position 2"), "{err}");
    }

    #[test]
    fn labels() {
        assert_eq!(TextEncoding::from_label("GB2312"), Some(TextEncoding::Gbk));
        assert_eq!(TextEncoding::from_label("CP936"), Some(TextEncoding::Gbk));
        assert_eq!(TextEncoding::from_label("Big5"), None);
    }
}
