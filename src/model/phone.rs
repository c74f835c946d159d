//! Telephone numbers: one canonical form for every desk's way of writing them.
//!
//! `canonical.md` ("Phone"): separators go; a mobile number (11 digits starting with 1) and a
//! landline (a `0` area code, 10 to 12 digits with the `0`) become `+86` plus the national digits;
//! a short service number (3 to 5 digits) stays as it is. Anything else is refused, never
//! guessed at: a wrong number on a police transfer sends the call-back to a stranger.

/// Why a text is not a telephone number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a mobile, landline or short service number: {0:?}")]
pub struct PhoneError(pub String);

/// The canonical form of a native telephone number.
pub fn normalize(text: &str) -> Result<String, PhoneError> {
    let fail = || PhoneError(text.to_string());
    let mut compact = String::with_capacity(text.len());
    for ch in text.trim().chars() {
        match ch {
            ' ' | '-' | '(' | ')' => {}
            _ => compact.push(ch),
        }
    }
    let (international, digits) = if let Some(rest) = compact.strip_prefix("+86") {
        (true, rest)
    } else if let Some(rest) = compact.strip_prefix("0086") {
        (true, rest)
    } else {
        (false, compact.as_str())
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail());
    }
    let n = digits.len();
    if international {
        // +86 is followed by a mobile number or a landline without its trunk `0`.
        let mobile = n == 11 && digits.starts_with('1');
        let landline = (9..=11).contains(&n)
            && !digits.starts_with('0')
            && !(n == 11 && digits.starts_with('1'));
        return if mobile || landline { Ok(format!("+86{digits}")) } else { Err(fail()) };
    }
    if n == 11 && digits.starts_with('1') {
        Ok(format!("+86{digits}"))
    } else if (10..=12).contains(&n)
        && digits.starts_with('0')
        && !digits.starts_with("00")
        && !(n == 12 && digits[1..].starts_with('1'))
    {
        // (A `0` and eleven digits starting with 1 would read back as a mobile number; no
        // area code makes such a landline, so it is refused rather than changed.)
        Ok(format!("+86{}", &digits[1..]))
    } else if (3..=5).contains(&n) {
        Ok(digits.to_string())
    } else {
        Err(fail())
    }
}

/// The bare national form that native documents carry: `13900000001`, `057487654321`, `110`.
pub fn national(canonical: &str) -> String {
    match canonical.strip_prefix("+86") {
        Some(rest) if rest.len() == 11 && rest.starts_with('1') => rest.to_string(),
        Some(rest) => format!("0{rest}"),
        None => canonical.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        assert_eq!(normalize("139 0000 0001").unwrap(), "+8613900000001");
        assert_eq!(normalize("(0791)86123456").unwrap(), "+8679186123456");
        assert_eq!(normalize("0691-2123456").unwrap(), "+866912123456");
        assert_eq!(normalize("(0592) 512 3456").unwrap(), "+865925123456");
        assert_eq!(normalize("+86 139-0000-0001").unwrap(), "+8613900000001");
        assert_eq!(normalize("008657487654321").unwrap(), "+8657487654321");
        assert_eq!(normalize("12345").unwrap(), "12345");
        assert_eq!(normalize("010-12345678").unwrap(), "+861012345678");
        assert_eq!(normalize("+861012345678").unwrap(), "+861012345678");
        assert_eq!(normalize("110").unwrap(), "110");
    }

    #[test]
    fn refusals() {
        for bad in [
            "139 0000 000",
            "",
            "12",
            "123456",
            "1390000000a",
            "0012345",
            "+8601234567890",
            "+86",
            "018539754712",
        ] {
            let err = normalize(bad).unwrap_err();
            assert_eq!(err.0, bad);
        }
        assert_eq!(
            normalize("139 0000 000").unwrap_err().to_string(),
            r#"not a mobile, landline or short service number: "139 0000 000""#
        );
    }

    #[test]
    fn national_form_round_trips() {
        for native in ["13900000001", "057487654321", "07918612345", "95598", "01012345678"] {
            assert_eq!(national(&normalize(native).unwrap()), native);
        }
    }
}
