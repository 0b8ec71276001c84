"""Flight SQL through pyarrow.flight (gRPC C++) with the protobuf messages packed by hand: the
same calls the ADBC driver makes for a bound execute, under a lean client, so benchmarks can
tell the server's part of a call from the driver's. Imported by the benchmarks beside it.
"""
import pyarrow.flight as fl


def pb_field(number, data):
    """A length-delimited protobuf field."""
    out = bytearray()
    x = len(data)
    key = number << 3 | 2
    while True:
        out.append((key & 0x7F) | (0x80 if key > 0x7F else 0))
        key >>= 7
        if not key:
            break
    while True:
        out.append((x & 0x7F) | (0x80 if x > 0x7F else 0))
        x >>= 7
        if not x:
            break
    return bytes(out) + data


def pb_fields(buf):
    """The length-delimited fields of a protobuf message, by number."""
    out, i = {}, 0
    while i < len(buf):
        number, i = buf[i] >> 3, i + 1
        length = shift = 0
        while True:
            b, i = buf[i], i + 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out[number], i = buf[i:i + length], i + length
    return out


def command(name, body):
    """A Flight SQL command packed in google.protobuf.Any."""
    return pb_field(1, b"type.googleapis.com/arrow.flight.protocol.sql." + name) + pb_field(2, body)


def prepared(client, sql):
    """`sql` prepared once (CreatePreparedStatement); returns `run(batch)`, which binds the one
    row of parameters in `batch` (DoPut), describes (GetFlightInfo) and fetches (DoGet) like
    the ADBC driver's bound execute, returning the result table."""
    request = command(b"ActionCreatePreparedStatementRequest", pb_field(1, sql.encode()))
    created = list(client.do_action(fl.Action("CreatePreparedStatement", request)))
    handle = pb_fields(pb_fields(created[0].body.to_pybytes())[2])[1]

    def descriptor(h):
        return fl.FlightDescriptor.for_command(command(b"CommandPreparedStatementQuery", pb_field(1, h)))

    def run(batch):
        writer, reader = client.do_put(descriptor(handle), batch.schema)
        writer.write_batch(batch)
        writer.done_writing()
        bound = pb_fields(reader.read().to_pybytes())[1]
        writer.close()
        info = client.get_flight_info(descriptor(bound))
        return client.do_get(info.endpoints[0].ticket).read_all()
    return run
