//! The generated section's place in a document: between two marker lines, everything
//! outside them kept byte for byte, so the hand-written analysis around it survives each run.

use anyhow::{bail, Result};

/// Where the generated section starts; everything before it (this line included) is kept.
pub const BEGIN_MARKER: &str = "<!-- report:begin -->";
/// Where the generated section ends; everything from this line on is kept.
pub const END_MARKER: &str = "<!-- report:end -->";

/// Puts `section` between the markers of `doc`, leaving every byte outside them as it was.
/// A marker counts only as a line of its own outside fenced code blocks, so prose or code
/// that mentions one (as the document's intro does) is left alone. Without markers, inserts
/// them with the section before the first `## ` heading (after the intro), or at the end if
/// there is none. A document with only one marker, either of them twice, or the end before
/// the begin is refused rather than guessed at.
pub fn replace_section(doc: &str, section: &str) -> Result<String> {
    let body = format!("\n{}\n", section.trim_end_matches('\n'));
    let begins = marker_lines(doc, BEGIN_MARKER);
    let ends = marker_lines(doc, END_MARKER);
    match (begins.as_slice(), ends.as_slice()) {
        ([begin], [end]) => {
            let kept_to = begin + BEGIN_MARKER.len();
            if *end < kept_to {
                bail!("{END_MARKER} comes before {BEGIN_MARKER}");
            }
            Ok(format!("{}{body}{}", &doc[..kept_to], &doc[*end..]))
        }
        ([], []) => {
            let at = lines_outside_fences(doc)
                .find(|(_, line)| line.starts_with("## "))
                .map_or(doc.len(), |(offset, _)| offset);
            let (before, after) = doc.split_at(at);
            let gap = if before.is_empty() || before.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            let trailing = if after.is_empty() { "" } else { "\n" };
            Ok(format!(
                "{before}{gap}{BEGIN_MARKER}{body}{END_MARKER}\n{trailing}{after}"
            ))
        }
        _ => bail!(
            "the document has {} {BEGIN_MARKER} and {} {END_MARKER} lines: want one of each \
             (or none, to insert them)",
            begins.len(),
            ends.len()
        ),
    }
}

/// Byte offsets of the lines of `doc` that are `marker` alone (trailing whitespace allowed),
/// outside fenced code blocks.
fn marker_lines(doc: &str, marker: &str) -> Vec<usize> {
    lines_outside_fences(doc)
        .filter(|(_, line)| line.trim_end() == marker)
        .map(|(offset, _)| offset)
        .collect()
}

/// Each line of `doc` (with its line ending) and its byte offset, leaving out the lines of
/// fenced code blocks (from a line starting with three backticks to the next).
fn lines_outside_fences(doc: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    let mut fenced = false;
    doc.split_inclusive('\n').filter_map(move |line| {
        let at = offset;
        offset += line.len();
        if line.starts_with("```") {
            fenced = !fenced;
            return None;
        }
        (!fenced).then_some((at, line))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report_doc::fixture;
    use crate::report_doc::section;

    const DOC: &str = "# Benchmarks\n\nIntro, kept: the `<!-- report:begin -->` and \
                       `<!-- report:end -->` markers.  \n\n```sh\n## not a heading\n\
                       <!-- report:begin -->\n```\n\n## Storage engine\n\n\
                       Hand-written | analysis.\r\n\n## Raft\n";

    #[test]
    fn missing_markers_are_inserted_once_after_the_intro() {
        let doc = replace_section(DOC, "## Latest report\n\nfigures\n").unwrap();
        // Markers named in prose or shown in a code block are not markers: the section
        // goes in after the intro, and the intro is untouched.
        assert_eq!(
            doc,
            "# Benchmarks\n\nIntro, kept: the `<!-- report:begin -->` and \
             `<!-- report:end -->` markers.  \n\n```sh\n## not a heading\n\
             <!-- report:begin -->\n```\n\n\
             <!-- report:begin -->\n## Latest report\n\nfigures\n<!-- report:end -->\n\n\
             ## Storage engine\n\nHand-written | analysis.\r\n\n## Raft\n"
        );
        // A document with no heading gets the section at its end.
        assert_eq!(
            replace_section("no heading", "s").unwrap(),
            "no heading\n<!-- report:begin -->\ns\n<!-- report:end -->\n"
        );
    }

    #[test]
    fn text_outside_the_markers_is_kept_byte_for_byte() {
        let doc = "before \u{2014} `<!-- report:end -->` \r\n<!-- report:begin -->  \n\
                   old\nold table\n<!-- report:end -->\r\nafter\n\n## Hand-written\n\ttab";
        let new = replace_section(doc, "new\n\n").unwrap();
        assert_eq!(
            new,
            "before \u{2014} `<!-- report:end -->` \r\n<!-- report:begin -->\nnew\n\
             <!-- report:end -->\r\nafter\n\n## Hand-written\n\ttab"
        );
        let begin = doc.find("<!-- report:begin -->  ").unwrap() + BEGIN_MARKER.len();
        assert_eq!(new[..begin], doc[..begin]);
        let tail = &doc[doc.rfind(END_MARKER).unwrap()..];
        assert!(new.ends_with(tail));
    }

    #[test]
    fn running_twice_gives_the_same_document() {
        let section = section(&fixture::info(), &fixture::results());
        let once = replace_section(DOC, &section).unwrap();
        let twice = replace_section(&once, &section).unwrap();
        assert_eq!(once, twice);
        assert_eq!(marker_lines(&twice, BEGIN_MARKER).len(), 1);
        assert_eq!(marker_lines(&twice, END_MARKER).len(), 1);
        // And the hand-written part after the section is untouched.
        assert!(twice.ends_with("## Storage engine\n\nHand-written | analysis.\r\n\n## Raft\n"));
    }

    #[test]
    fn a_document_with_broken_markers_is_refused() {
        for doc in [
            "a\n<!-- report:begin -->\nb `<!-- report:end -->`\n",
            "a\n<!-- report:end -->\nb\n",
            "<!-- report:end -->\n<!-- report:begin -->\n",
            "<!-- report:begin -->\n<!-- report:begin -->\n<!-- report:end -->\n",
        ] {
            assert!(replace_section(doc, "s").is_err(), "{doc:?}");
        }
    }
}
