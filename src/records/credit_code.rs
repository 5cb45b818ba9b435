//! The unified social credit code (统一社会信用代码) of GB 32100-2015: 18 characters from a
//! 31-symbol alphabet, the last a check character over the first 17.

/// The code's alphabet: digits and capitals without I, O, S, V and Z.
const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// Weight of each of the first 17 positions (3^i mod 31).
const WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

fn value_of(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// The check character for the first 17 characters of a code.
pub fn check_character(first17: &[u8]) -> Option<char> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0;
    for (c, w) in first17.iter().zip(WEIGHTS) {
        sum += value_of(*c)? * w;
    }
    let check = (31 - sum % 31) % 31;
    Some(ALPHABET[check as usize] as char)
}

/// Validates a code, explaining the first problem found.
pub fn validate(code: &str) -> Result<(), String> {
    let b = code.as_bytes();
    if b.len() != 18 || !code.is_ascii() {
        return Err(format!(
            "must be 18 characters, got {}",
            code.chars().count()
        ));
    }
    if let Some(p) = b.iter().position(|&c| value_of(c).is_none()) {
        return Err(format!(
            "character {} (`{}`) is not allowed: use 0-9 and capitals except I, O, S, V, Z",
            p + 1,
            b[p] as char
        ));
    }
    if !b[2..8].iter().all(u8::is_ascii_digit) {
        return Err("characters 3-8 must be the administrative division code (digits)".into());
    }
    let expected = check_character(&b[..17]).unwrap_or('?');
    if b[17] as char != expected {
        return Err(format!(
            "check character is `{}`, but GB 32100-2015 gives `{expected}`",
            b[17] as char
        ));
    }
    Ok(())
}
