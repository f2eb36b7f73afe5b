//! The batch's CSV file (RFC 4180), appended durably row by row: a crash keeps every row
//! the person has already seen.

use super::provision::Row;
use super::StationError;
use crate::observe::CardReport;
use std::io::Write;
use std::path::Path;

const HEADER: &str =
    "n,time,reader,iccid,form_factor,eid,status,imsi,operator,labels,company,note,warnings,pin_disable\n";

/// A provisioning batch's results (`--provision`): one row per card that got a code or
/// was turned away. The activation code is the one used, never its confirmation code.
const RESULTS_HEADER: &str =
    "time,reader,eid,iccid,code_line,activation_code,labels,result,detail,ms\n";

/// An open batch CSV.
#[derive(Debug)]
pub(crate) struct Csv {
    path: String,
    file: std::fs::File,
}

impl Csv {
    /// Open the reads' CSV for appending; a new or empty file gets the header first.
    pub(crate) fn open(path: &Path) -> Result<Csv, StationError> {
        Csv::open_with(path, HEADER)
    }

    /// Open a provisioning batch's results CSV for appending (a restarted batch goes on
    /// in the same file).
    pub(crate) fn open_results(path: &Path) -> Result<Csv, StationError> {
        Csv::open_with(path, RESULTS_HEADER)
    }

    fn open_with(path: &Path, header: &str) -> Result<Csv, StationError> {
        let shown = path.display().to_string();
        let err = |source| StationError::Csv {
            path: shown.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        if file.metadata().map_err(err)?.len() == 0 {
            file.write_all(header.as_bytes()).map_err(err)?;
            file.sync_data().map_err(err)?;
        }
        Ok(Csv { path: shown, file })
    }

    pub(crate) fn append(&mut self, r: &CardReport) -> Result<(), StationError> {
        let card = r.card.as_ref();
        let text = |f: Option<&String>| f.cloned().unwrap_or_default();
        let fields = [
            r.n.unwrap_or_default().to_string(),
            crate::time::utc_text(r.at),
            r.reader.clone(),
            text(card.and_then(|c| c.iccid.as_ref())),
            card.map(|c| c.form_text()).unwrap_or_default().to_string(),
            text(card.and_then(|c| c.eid.as_ref())),
            card.and_then(|c| c.status)
                .map(|s| s.word())
                .unwrap_or_default()
                .to_string(),
            text(card.and_then(|c| c.imsi.as_ref())),
            text(card.and_then(|c| c.operator.as_ref())),
            r.batch.labels.join(";"),
            text(r.batch.company.as_ref()),
            text(r.batch.note.as_ref()),
            r.warnings.join("; "),
            r.pin_disable.clone().unwrap_or_default(),
        ];
        self.write(&fields)
    }

    pub(crate) fn append_result(&mut self, r: &Row) -> Result<(), StationError> {
        let (line, code) = match &r.code {
            Some((l, c)) => (l.to_string(), c.clone()),
            None => (String::new(), String::new()),
        };
        let fields = [
            crate::time::utc_text(r.at),
            r.reader.clone(),
            r.eid.clone(),
            r.iccid.clone().unwrap_or_default(),
            line,
            code,
            r.labels.join(";"),
            r.result.word().to_string(),
            r.words.clone(),
            r.ms.map(|m| m.to_string()).unwrap_or_default(),
        ];
        self.write(&fields)
    }

    fn write(&mut self, fields: &[String]) -> Result<(), StationError> {
        let mut line = fields
            .iter()
            .map(|f| field(f))
            .collect::<Vec<_>>()
            .join(",");
        line.push('\n');
        let err = |source| StationError::Csv {
            path: self.path.clone(),
            source,
        };
        // One write per row, then fsync: a crash keeps every row already shown.
        self.file.write_all(line.as_bytes()).map_err(err)?;
        self.file.sync_data().map_err(err)
    }
}

/// RFC 4180: quote a field holding a comma, quote or line break; double inner quotes.
fn field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn csv_fields_with_commas_and_quotes_are_quoted() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
