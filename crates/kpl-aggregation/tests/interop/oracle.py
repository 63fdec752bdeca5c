"""Drives the Python aws-kinesis-agg 1.2.3 implementation for tests/interop.rs.

Line protocol on stdin/stdout, every field hex-encoded ("-" for an absent explicit hash key):

  python oracle.py encode
    in:  SET / "<pk hex> <ehk hex or -> <data hex>" ... / END, repeated
    out: one line per set: "<blob hex>"
  python oracle.py decode
    in:  one line per record: "<partition key hex> <data hex>"
    out: "RECORDS <n>" then n lines "<pk hex> <ehk hex or -> <data hex> <sub seq> <aggregated 0|1>"
"""

import base64
import sys

from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import iter_deaggregate_records


def unhex(text):
    return bytes.fromhex(text)


def encode(lines):
    records = None
    for line in lines:
        line = line.rstrip("\r\n")
        if line == "SET":
            records = []
        elif line == "END":
            aggregator = RecordAggregator()  # its maximum: 1 MiB
            for pk, ehk, data in records:
                if aggregator.add_user_record(pk, data, ehk) is not None:
                    raise SystemExit("oracle: set does not fit in one aggregate")
            _, _, blob = aggregator.clear_and_get().get_contents()
            print(blob.hex())
        elif line:
            pk, ehk, data = line.split(" ")
            records.append(
                (
                    unhex(pk).decode("utf-8"),
                    None if ehk == "-" else unhex(ehk).decode("ascii"),
                    unhex(data),
                )
            )


def decode(lines):
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            continue
        pk, data = line.split(" ")
        raw = {
            "PartitionKey": unhex(pk).decode("utf-8"),
            "Data": unhex(data),
            "SequenceNumber": "1",
            "ApproximateArrivalTimestamp": 0,
        }
        out = list(iter_deaggregate_records([raw], data_format="Boto3"))
        print("RECORDS %d" % len(out))
        for record in out:
            k = record["kinesis"]
            ehk = k.get("explicitHashKey")
            aggregated = bool(k.get("aggregated"))
            # Sub-records come out base64-encoded (Lambda shape); a pass-through keeps raw bytes.
            data = base64.b64decode(k["data"]) if aggregated else bytes(k["data"])
            print(
                "%s %s %s %d %d"
                % (
                    k["partitionKey"].encode("utf-8").hex(),
                    "-" if ehk is None else ehk.encode("ascii").hex(),
                    data.hex(),
                    int(k.get("subSequenceNumber") or 0),
                    1 if aggregated else 0,
                )
            )


if __name__ == "__main__":
    {"encode": encode, "decode": decode}[sys.argv[1]](sys.stdin)
