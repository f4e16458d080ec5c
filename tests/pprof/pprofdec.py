"""pprofdec: an independent, strict decoder of profile.proto for allocprof's tests (stdlib only).

It does not share a line with the C encoder: a generic protobuf wire reader (varints and
length-delimited fields), then the perftools.profiles schema applied by field number. Anything
pprof would reject, and anything allocprof never writes (unknown fields, wrong wire types), is
reported as a problem instead of being skipped, so a bug cannot hide behind a lenient reader.
"""

import gzip


class DecodeError(Exception):
    pass


def read_varint(buf, i):
    x = shift = 0
    while True:
        if i >= len(buf):
            raise DecodeError('varint runs past the end at %d' % i)
        b = buf[i]
        i += 1
        x |= (b & 0x7f) << shift
        if not b & 0x80:
            return x, i
        shift += 7
        if shift > 63:
            raise DecodeError('varint longer than 10 bytes at %d' % i)


def to_int64(x):
    return x - (1 << 64) if x >= 1 << 63 else x


def fields(buf):
    """Yields (field number, wire type, value): an int for wire type 0, bytes for wire type 2."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        fno, wt = key >> 3, key & 7
        if fno == 0:
            raise DecodeError('field number 0 at %d' % i)
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            if i + n > len(buf):
                raise DecodeError('field %d: length %d runs past the end' % (fno, n))
            v, i = bytes(buf[i:i + n]), i + n
        else:
            raise DecodeError('field %d: wire type %d (allocprof writes only 0 and 2)' % (fno, wt))
        yield fno, wt, v


def packed_varints(data):
    out, i = [], 0
    while i < len(data):
        v, i = read_varint(data, i)
        out.append(v)
    return out


def message(buf, schema, what):
    """Decodes one message: schema maps field number -> (name, kind, repeated) with kind 'u'
    (varint), 'm' (bytes: string or sub-message). Returns {name: value or list}."""
    out = {}
    for name, kind, rep in schema.values():
        out[name] = [] if rep else (b'' if kind == 'm' else 0)
    seen = set()
    for fno, wt, v in fields(buf):
        if fno not in schema:
            raise DecodeError('%s: unknown field %d' % (what, fno))
        name, kind, rep = schema[fno]
        if kind == 'u':
            if wt == 2 and rep:
                vals = packed_varints(v)
            elif wt == 0:
                vals = [v]
            else:
                raise DecodeError('%s.%s: wire type %d' % (what, name, wt))
        else:
            if wt != 2:
                raise DecodeError('%s.%s: wire type %d' % (what, name, wt))
            vals = [v]
        if rep:
            out[name].extend(vals)
        else:
            if fno in seen:
                # pprof's own check: a second time_nanos means "concatenated profiles".
                raise DecodeError('%s.%s appears twice' % (what, name))
            seen.add(fno)
            out[name] = vals[0]
    return out


PROFILE = {1: ('sample_type', 'm', True), 2: ('sample', 'm', True), 3: ('mapping', 'm', True),
           4: ('location', 'm', True), 5: ('function', 'm', True), 6: ('string_table', 'm', True),
           7: ('drop_frames', 'u', False), 8: ('keep_frames', 'u', False),
           9: ('time_nanos', 'u', False), 10: ('duration_nanos', 'u', False),
           11: ('period_type', 'm', False), 12: ('period', 'u', False),
           13: ('comment', 'u', True), 14: ('default_sample_type', 'u', False)}
VALUETYPE = {1: ('type', 'u', False), 2: ('unit', 'u', False)}
SAMPLE = {1: ('location_id', 'u', True), 2: ('value', 'u', True), 3: ('label', 'm', True)}
LABEL = {1: ('key', 'u', False), 2: ('str', 'u', False), 3: ('num', 'u', False), 4: ('num_unit', 'u', False)}
MAPPING = {1: ('id', 'u', False), 2: ('memory_start', 'u', False), 3: ('memory_limit', 'u', False),
           4: ('file_offset', 'u', False), 5: ('filename', 'u', False), 6: ('build_id', 'u', False),
           7: ('has_functions', 'u', False), 8: ('has_filenames', 'u', False),
           9: ('has_line_numbers', 'u', False), 10: ('has_inline_frames', 'u', False)}
LOCATION = {1: ('id', 'u', False), 2: ('mapping_id', 'u', False), 3: ('address', 'u', False),
            4: ('line', 'm', True), 5: ('is_folded', 'u', False)}
LINE = {1: ('function_id', 'u', False), 2: ('line', 'u', False)}
FUNCTION = {1: ('id', 'u', False), 2: ('name', 'u', False), 3: ('system_name', 'u', False),
            4: ('filename', 'u', False), 5: ('start_line', 'u', False)}


class Profile:
    """A decoded profile with string indices resolved. Attributes: sample_types [(type, unit)],
    samples [{'locs': [ids], 'values': [int], 'labels': [...]}], mappings {id: dict},
    locations {id: dict with 'lines': [(function id, line)]}, functions {id: dict}, strings,
    plus the scalar header fields. problems: what pprof would reject."""

    def __init__(self, data):
        self.raw = data
        if data[:2] == b'\x1f\x8b':
            data = gzip.decompress(data)
            self.gzipped = True
        else:
            self.gzipped = False
        top = message(data, PROFILE, 'Profile')
        # pprof does not validate UTF-8 either: a corrupt name must not stop the checks.
        self.strings = [s.decode('utf-8', 'replace') for s in top['string_table']]
        self.problems = []
        if not self.strings or self.strings[0] != '':
            self.problems.append('string_table[0] is not "" (%r)' % (self.strings[:1],))

        def s(i, what):
            if not 0 <= i < len(self.strings):
                self.problems.append('%s: string index %d out of range (%d strings)' % (what, i, len(self.strings)))
                return None
            return self.strings[i]

        self.sample_types = [(s(v['type'], 'sample_type'), s(v['unit'], 'sample_type'))
                             for v in (message(b, VALUETYPE, 'ValueType') for b in top['sample_type'])]
        pt = message(top['period_type'], VALUETYPE, 'ValueType')
        self.period_type = (s(pt['type'], 'period_type'), s(pt['unit'], 'period_type'))
        self.period = to_int64(top['period'])
        self.time_nanos = to_int64(top['time_nanos'])
        self.duration_nanos = to_int64(top['duration_nanos'])
        self.comments = [s(i, 'comment') for i in top['comment']]
        self.default_sample_type = s(top['default_sample_type'], 'default_sample_type')
        self.drop_frames = s(top['drop_frames'], 'drop_frames')

        def by_id(blobs, schema, what):
            out = {}
            for b in blobs:
                m = message(b, schema, what)
                if m['id'] == 0:
                    self.problems.append('%s with id 0' % what)
                elif m['id'] in out:
                    self.problems.append('duplicate %s id %d' % (what, m['id']))
                out[m['id']] = m
            return out

        self.functions = by_id(top['function'], FUNCTION, 'Function')
        for f in self.functions.values():
            for k in ('name', 'system_name', 'filename'):
                f[k] = s(f[k], 'Function.' + k)
        self.mappings = by_id(top['mapping'], MAPPING, 'Mapping')
        self.mapping_order = [message(b, MAPPING, 'Mapping')['id'] for b in top['mapping']]
        for m in self.mappings.values():
            m['filename'] = s(m['filename'], 'Mapping.filename')
            m['build_id'] = s(m['build_id'], 'Mapping.build_id')
        self.locations = by_id(top['location'], LOCATION, 'Location')
        for loc in self.locations.values():
            lines = []
            for b in loc['line']:
                ln = message(b, LINE, 'Line')
                if ln['function_id'] not in self.functions:
                    self.problems.append('location %d: line with unknown function id %d' % (loc['id'], ln['function_id']))
                lines.append((ln['function_id'], to_int64(ln['line'])))
            loc['lines'] = lines
        self.samples = []
        for b in top['sample']:
            m = message(b, SAMPLE, 'Sample')
            if len(m['value']) != len(self.sample_types):
                self.problems.append('sample has %d values vs. %d types' % (len(m['value']), len(self.sample_types)))
            for lid in m['location_id']:
                if lid not in self.locations:
                    self.problems.append('sample references unknown location %d' % lid)
            labels = []
            for lb in m['label']:
                x = message(lb, LABEL, 'Label')
                labels.append((s(x['key'], 'Label.key'), s(x['str'], 'Label.str') if x['str'] else None,
                               to_int64(x['num']), s(x['num_unit'], 'Label.num_unit')))
            self.samples.append({'locs': m['location_id'], 'values': [to_int64(v) for v in m['value']],
                                 'labels': labels})

    def frames(self, sample):
        """The sample's frames leaf first, inline lines expanded innermost first:
        [(function name or None for a location without lines, location)]."""
        out = []
        for lid in sample['locs']:
            loc = self.locations.get(lid)
            if loc is None:
                continue
            if not loc['lines']:
                out.append((None, loc))
            for fid, _ in loc['lines']:
                f = self.functions.get(fid)
                out.append((f['name'] if f else None, loc))
        return out

    def per_function(self):
        """{name: {'flat': [4 values], 'cum': [4 values]}} aggregated as pprof does: flat to the
        innermost line of the leaf location, cum once per sample to every function on it.
        Locations without lines count under the key None."""
        n = len(self.sample_types)
        out = {}

        def row(name):
            return out.setdefault(name, {'flat': [0] * n, 'cum': [0] * n})

        for smp in self.samples:
            fr = self.frames(smp)
            if not fr:
                continue
            r = row(fr[0][0])
            for i, v in enumerate(smp['values']):
                r['flat'][i] += v
            for name in {f for f, _ in fr}:
                r = row(name)
                for i, v in enumerate(smp['values']):
                    r['cum'][i] += v
        return out


def load(path):
    with open(path, 'rb') as f:
        return Profile(f.read())
