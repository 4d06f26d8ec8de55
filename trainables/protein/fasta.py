"""FASTA reading and residue checks shared by every protein layout.

Protein language models have a fixed vocabulary: ESM and TAPE know the 20 standard amino acids plus the
IUPAC codes X (unknown), B (D or N), Z (E or Q), U (selenocysteine) and O (pyrrolysine). A letter
outside it would silently become an "unknown" token, and a digit, gap (``-``, ``.``) or internal stop
(``*``) means the file is an alignment or a translated nucleotide sequence, not a protein, so each is
refused with a one-line ``UserError`` naming file, record (1-based number and header) and field
instead of reaching the tokenizer. Lower case is upper-cased and one trailing ``*`` (a stop codon
written by translators) is dropped, because those change nothing about the protein.

J (IUPAC: leucine or isoleucine, as mass spectrometry cannot tell them apart) is accepted too: real
data carry it (31 psychrophilic sequences of ThermoProt) but neither model vocabulary has it, so
``model_residues`` reads it as X (unknown) when a ``Protein`` is built; records keep it, so a file
written from them (the bundled sample) stays identical to its source.

A record is a ``>`` header line followed by sequence lines (joined; blank lines ignored), as written
by UniProt, NCBI and ThermoProt alike.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Union

from smctune.errors import UserError

STANDARD = "ACDEFGHIKLMNPQRSTVWY"
RARE = "XBZUO"
LEU_OR_ILE = "J"
VALID_TEXT = f"{STANDARD} and {', '.join(RARE + LEU_OR_ILE)}"
# re.ASCII keeps IGNORECASE from matching non-ASCII look-alikes (the Kelvin sign, the long s).
_INVALID = re.compile(f"[^{STANDARD}{RARE}{LEU_OR_ILE}]", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True)
class FastaRecord:
    """One record: its 1-based number in the file, the header (after ``>``, stripped) and residues."""

    number: int
    header: str
    sequence: str


def clean_sequence(raw: str, where: str) -> str:
    """Checked residues, upper case, without a trailing stop (J is kept: ``model_residues`` maps it);
    ``where`` names the field, e.g. ``"x.fasta record 12 ('Sequence 12'): field 'sequence'"``."""
    sequence = raw[:-1] if raw.endswith("*") else raw
    if not sequence:
        raise UserError(f"{where} is empty")
    bad = _INVALID.search(sequence)
    if bad is not None:
        raise UserError(f"{where} has {bad.group()!r} at residue {bad.start() + 1} "
                        f"(valid: {VALID_TEXT})")
    return sequence.upper()


def model_residues(sequence: str) -> str:
    """A checked sequence in the models' alphabet: J (no token in ESM or TAPE) becomes X."""
    return sequence.replace(LEU_OR_ILE, "X")


def record_where(name: str, number: int, header: str) -> str:
    return f"{name} record {number} ({header!r:.80})"


def parse_fasta(lines: Iterable[bytes], name: str) -> list[FastaRecord]:
    """Every record of a FASTA byte stream, checked; ``name`` is how errors refer to the file."""
    records: list[FastaRecord] = []
    header, parts = None, []

    def finish() -> None:
        number = len(records) + 1
        where = f"{record_where(name, number, header)}: field 'sequence'"
        records.append(FastaRecord(number, header, clean_sequence("".join(parts), where)))

    for line_number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{name} line {line_number}: not UTF-8 ({err.reason} at byte "
                            f"{err.start})") from None
        text = text.strip()
        if not text:
            continue
        if text.startswith(">"):
            if header is not None:
                finish()
            header, parts = text[1:].strip(), []
        elif header is None:
            raise UserError(f"{name} line {line_number}: sequence data before the first '>' header "
                            "(not a FASTA file?)")
        else:
            parts.append(text)
    if header is None:
        raise UserError(f"{name}: no FASTA records (empty file)")
    finish()
    return records


def open_binary(path: Union[str, Path]) -> IO[bytes]:
    try:
        return Path(path).open("rb")
    except OSError as err:
        raise UserError(f"cannot read data file {path}: {err.strerror}") from None


def read_fasta(path: Union[str, Path]) -> list[FastaRecord]:
    """All records of a FASTA file on disk."""
    with open_binary(path) as stream:
        return parse_fasta(stream, str(path))
