"""read_pyarrow.py parquet|text LOCATION [BUFFER_MIB]
pyarrow's side of benches/read_throughput.sh: reads a whole dataset into Arrow memory and
prints ROWS=<number of rows> and JOB_SECONDS=<seconds of the read alone> (bench.py records
the latter; its wall time also holds interpreter start-up and `import pyarrow`).

LOCATION is a local directory, or s3://BUCKET/PREFIX read through pyarrow.fs.S3FileSystem
with the endpoint and keys of AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
(region us-east-1).

Both list the directory first (FileSelector, as Sluice lists its input) and read the files
it holds, sorted by name. (Handing read_table the directory itself makes pyarrow HeadObject
the prefix, which s3s-fs answers with a 500 instead of a 404.)

parquet: pyarrow.parquet.read_table on the list of files: every column, every row group,
  use_threads and pre_buffer at their defaults (the files are read and decoded in parallel).
text: pyarrow.csv.read_csv on each file in turn, every line one value of a single string
  column `line`: a delimiter (\\x01) that the data does not hold, no quoting, no escapes, no
  newlines inside values, the type fixed to string (no inference). read_csv parses blocks
  (1 MiB, its default) of one file in parallel (use_threads default). It skips empty lines,
  which the generated text does not have; the script checks the count against Sluice's anyway.
  BUFFER_MIB (text only): open each file with open_input_stream(buffer_size=BUFFER_MIB MiB),
  i.e. read it in requests of that size rather than one request per 1 MiB block; by default
  (no BUFFER_MIB) the stream is unbuffered, as open_input_stream gives it.
"""
import os
import sys
import time
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.fs as pfs
import pyarrow.parquet as pq


def filesystem(location):
    if not location.startswith("s3://"):
        return pfs.LocalFileSystem(), os.path.abspath(location)
    ep = urlparse(os.environ["AWS_ENDPOINT_URL"])
    s3 = pfs.S3FileSystem(
        endpoint_override=ep.netloc,
        scheme=ep.scheme,
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
    )
    return s3, location[len("s3://"):].rstrip("/")


def list_files(fs, path):
    infos = fs.get_file_info(pfs.FileSelector(path))
    return sorted(i.path for i in infos if i.type == pfs.FileType.File)


def read_parquet(fs, path, buffer_mib=None):
    assert buffer_mib is None, "BUFFER_MIB is for text only"
    return pq.read_table(list_files(fs, path), filesystem=fs).num_rows


def read_text(fs, path, buffer_mib=None):
    files = list_files(fs, path)
    buf = buffer_mib << 20 if buffer_mib else None
    ro = pcsv.ReadOptions(column_names=["line"])
    po = pcsv.ParseOptions(
        delimiter="\x01", quote_char=False, escape_char=False, newlines_in_values=False
    )
    co = pcsv.ConvertOptions(column_types={"line": pa.string()})
    rows = 0
    for f in files:
        with fs.open_input_stream(f, buffer_size=buf) as src:
            rows += pcsv.read_csv(src, read_options=ro, parse_options=po, convert_options=co).num_rows
    return rows


def main():
    kind, location = sys.argv[1], sys.argv[2]
    buffer_mib = int(sys.argv[3]) if len(sys.argv) > 3 else None
    fs, path = filesystem(location)
    t0 = time.perf_counter()
    rows = {"parquet": read_parquet, "text": read_text}[kind](fs, path, buffer_mib)
    dt = time.perf_counter() - t0
    print(f"ROWS={rows}")
    print(f"JOB_SECONDS={dt:.3f}")


if __name__ == "__main__":
    main()
