//! A USSD string checked before it reaches a modem (TS 22.030 §6.5.2): pure, shared by
//! the contract (a `ussd` command's params), the operators' data and the modem's USSD.

/// The longest USSD string: 182 GSM 7-bit characters (TS 23.038 §6.1.2.3: 160 octets).
pub const MAX_LEN: usize = 182;

/// A string refused before it reaches the modem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UssdInputError {
    #[error("empty USSD string")]
    Empty,
    #[error("USSD string of {0} characters: at most {MAX_LEN}")]
    TooLong(usize),
    #[error("USSD code {0:?}: only digits, *, # and + (TS 22.030 §6.5.2), starting with * or #")]
    Code(String),
    #[error("USSD answer {0:?}: letters, digits, space, *, # and + only")]
    Answer(String),
}

/// Check a code that opens a session (`*100#`; TS 22.030 §6.5.2's characters).
pub fn check_code(code: &str) -> Result<(), UssdInputError> {
    if code.is_empty() {
        return Err(UssdInputError::Empty);
    }
    if code.len() > MAX_LEN {
        return Err(UssdInputError::TooLong(code.len()));
    }
    let ok = code.starts_with(['*', '#'])
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'*' | b'#' | b'+'));
    if !ok {
        return Err(UssdInputError::Code(code.to_string()));
    }
    Ok(())
}

/// Check an answer to a menu (`1`, a voucher number, a short word).
pub fn check_answer(answer: &str) -> Result<(), UssdInputError> {
    if answer.is_empty() {
        return Err(UssdInputError::Empty);
    }
    if answer.len() > MAX_LEN {
        return Err(UssdInputError::TooLong(answer.len()));
    }
    if !answer
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'*' | b'#' | b'+'))
    {
        return Err(UssdInputError::Answer(answer.to_string()));
    }
    Ok(())
}
