/*
 * flame.c: `allocprof flame TRACE -o FILE.html`: one self-contained HTML file (inline CSS, JS and
 * data; nothing fetched from the network) with an interactive flame graph of the call tree:
 * click a frame to zoom into it, search by regular expression (matches highlighted, their share
 * shown), hover for the four figures, switch the sample index without regenerating the file.
 *
 * The tree goes through the same stack filter as every view (--focus, --ignore, --hide, --at,
 * temp_*), root first; each node carries its four cumulative figures. The page's state lives in
 * the URL fragment (#zoom=main;parse&index=alloc_space&search=re), so a view can be bookmarked
 * and shared; a click and a fragment go through the same function.
 */
#include "analyses.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct fl_node {
	uint32_t parent, name;
	double v[AP_M__COUNT];
} fl_node;

typedef struct fl_ctx {
	const ap_view_opts *o;
	AP_VEC(fl_node) nodes;
	ap_map child; /* hash(parent, name) -> node + 1 */
	AP_VEC(char *) names;
	ap_map name_index;
	char *buf;
	size_t cap;
} fl_ctx;

static uint32_t fl_name(fl_ctx *c, const char *s)
{
	for (uint64_t h = ap_hash_str(s) | 1;; h += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&c->name_index, h, &added);
		if (added) {
			char *own = ap_xstrdup(s);
			AP_VEC_PUSH(c->names, own);
			*slot = c->names.n;
		}
		if (!strcmp(c->names.v[*slot - 1], s))
			return (uint32_t)(*slot - 1);
	}
}

static uint32_t fl_child(fl_ctx *c, uint32_t parent, uint32_t name)
{
	for (uint64_t h = ap_hash64(((uint64_t)parent << 32) | name) | 1;; h += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&c->child, h, &added);
		if (added) {
			fl_node n = {.parent = parent, .name = name};
			AP_VEC_PUSH(c->nodes, n);
			*slot = c->nodes.n;
		}
		fl_node *n = &c->nodes.v[*slot - 1];
		if (n->parent == parent && n->name == name)
			return (uint32_t)(*slot - 1);
	}
}

static void fl_one(void *ctx, const ap_stack_view *s)
{
	fl_ctx *c = ctx;
	uint32_t at = 0;
	for (int m = 0; m < AP_M__COUNT; m++)
		c->nodes.v[0].v[m] += s->v[m];
	for (size_t i = s->n; i-- > 0;) {
		const char *nm = ap_frame_name(s->frames[i], c->o->lines ? AP_G_LINE : AP_G_FUNCTION, &c->buf, &c->cap);
		at = fl_child(c, at, fl_name(c, nm));
		for (int m = 0; m < AP_M__COUNT; m++)
			c->nodes.v[at].v[m] += s->v[m];
	}
}

/* A JSON string that is also safe inside <script>: no "</script>", no "<!--". */
static void js_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20 || ch == '<' || ch == '>' || ch == '&')
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

static void html_str(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '<')
			fputs("&lt;", out);
		else if (*s == '>')
			fputs("&gt;", out);
		else if (*s == '&')
			fputs("&amp;", out);
		else
			fputc(*s, out);
	}
}

static const char page_head[] =
	"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
	"style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
	"<title>";

static const char page_style[] =
	"</title>\n<style>\n"
	"body{font:13px sans-serif;margin:8px;color:#222}\n"
	"#bar{display:flex;gap:10px;align-items:center;flex-wrap:wrap;margin-bottom:4px}\n"
	/* A fixed height: hovering must not move the frames under the pointer. */
	"#info{font-family:monospace;white-space:pre;height:6.4em;overflow:hidden;margin:4px 0}\n"
	"#flame{position:relative;width:100%;overflow:hidden}\n"
	".fr{position:absolute;height:17px;box-sizing:border-box;border-right:1px solid #fff;"
	"border-bottom:1px solid #fff;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;"
	"font:11px/16px monospace;padding-left:2px;cursor:pointer}\n"
	".fr:hover{outline:1px solid #000}\n.fr.dim{opacity:.5}\n"
	".fr.match{background:#d3f !important}\n"
	"#errors{color:#b00;white-space:pre}\n#tip{position:fixed;pointer-events:none;background:#ffe;"
	"border:1px solid #999;padding:4px;display:none;font:12px monospace;white-space:pre;z-index:9}\n"
	"</style></head><body>\n";

/* The script: reads the data, draws the graph, keeps the state in the URL fragment. */
static const char page_script[] =
	"<script>\n"
	"(function () {\n"
	"'use strict';\n"
	"var errs = document.getElementById('errors');\n"
	"function report(m) { errs.textContent += m + '\\n'; document.body.setAttribute('data-errors', errs.textContent); }\n"
	"window.addEventListener('error', function (e) { report('error: ' + e.message); });\n"
	"try {\n"
	"var D = JSON.parse(document.getElementById('data').textContent);\n"
	"var M = D.metrics, N = [], t = D.nodes, i;\n"
	"for (i = 0; i < t.length; i += 6) {\n"
	"  var p = t[i] < 0 ? null : N[t[i]];\n"
	"  var n = {id: N.length, name: D.names[t[i + 1]], v: [t[i + 2], t[i + 3], t[i + 4], t[i + 5]],\n"
	"           parent: p, kids: [], depth: p ? p.depth + 1 : 0};\n"
	"  if (p) p.kids.push(n);\n"
	"  N.push(n);\n"
	"}\n"
	"N.forEach(function (n) { n.kids.sort(function (a, b) { return a.name < b.name ? -1 : a.name > b.name ? 1 : 0; }); });\n"
	"var root = N[0], zoomed = root, idx = D.index, re = null;\n"
	"var flame = document.getElementById('flame'), tip = document.getElementById('tip');\n"
	"var info = document.getElementById('info'), sel = document.getElementById('index');\n"
	"var search = document.getElementById('search'), matched = document.getElementById('matched');\n"
	"var zoomLabel = document.getElementById('zoom');\n"
	"M.forEach(function (m, k) { var o = document.createElement('option'); o.value = k; o.textContent = m;\n"
	"  sel.appendChild(o); });\n"
	"function fmt(v, m) {\n"
	"  if (!/space/.test(M[m])) return String(Math.round(v));\n"
	"  var u = ['B', 'kB', 'MB', 'GB', 'TB'], k = 0, a = Math.abs(v);\n"
	"  while (k < 4 && a >= 1024) { a /= 1024; v /= 1024; k++; }\n"
	"  return (k ? v.toFixed(2).replace(/\\.?0+$/, '') : String(Math.round(v))) + u[k];\n"
	"}\n"
	"function pct(v, tot) { return tot ? (100 * v / tot).toFixed(2) + '%' : '0%'; }\n"
	"function self(n, m) { var s = n.v[m]; n.kids.forEach(function (k) { s -= k.v[m]; }); return s; }\n"
	"function path(n) { var a = []; for (; n && n !== root; n = n.parent) a.unshift(n.name); return a; }\n"
	"function color(s) { var h = 0; for (var j = 0; j < s.length; j++) h = (h * 31 + s.charCodeAt(j)) >>> 0;\n"
	"  return 'hsl(' + (h % 50) + ',' + (70 + h % 25) + '%,' + (55 + (h >> 8) % 15) + '%)'; }\n"
	"function describe(n) {\n"
	"  var s = n === root ? 'all stacks' : n.name;\n"
	"  M.forEach(function (m, k) { s += '\\n' + (m + ':              ').slice(0, 15) + fmt(n.v[k], k) +\n"
	"    ' (' + pct(n.v[k], root.v[k]) + '), self ' + fmt(self(n, k), k); });\n"
	"  return s;\n"
	"}\n"
	"function box(frag, n, x, w, dim) {\n"
	"  var e = document.createElement('div');\n"
	"  e.className = 'fr' + (dim ? ' dim' : '');\n"
	"  e.style.left = x.toFixed(1) + 'px'; e.style.width = w.toFixed(1) + 'px';\n"
	"  e.style.top = (n.depth * 17) + 'px'; e.style.background = n === root ? '#ccc' : color(n.name);\n"
	"  e.setAttribute('data-id', n.id); e.setAttribute('data-name', n === root ? '' : n.name);\n"
	"  e.textContent = w > 24 ? (n === root ? 'all' : n.name) : '';\n"
	"  frag.appendChild(e);\n"
	"}\n"
	"function render() {\n"
	"  var W = flame.clientWidth || 1000, frag = document.createDocumentFragment(), maxd = 0;\n"
	"  for (var a = zoomed.parent; a; a = a.parent) box(frag, a, 0, W, true);\n"
	"  (function walk(n, x, w) {\n"
	"    box(frag, n, x, w, false); if (n.depth > maxd) maxd = n.depth;\n"
	"    var tot = n.v[idx], cx = x;\n"
	"    n.kids.forEach(function (k) { if (tot <= 0 || k.v[idx] <= 0) return; var kw = w * k.v[idx] / tot;\n"
	"      if (kw >= 0.5) walk(k, cx, kw); cx += kw; });\n"
	"  })(zoomed, 0, W);\n"
	"  flame.textContent = ''; flame.appendChild(frag);\n"
	"  flame.style.height = ((maxd + 1) * 17) + 'px';\n"
	"  zoomLabel.textContent = zoomed === root ? '' : 'zoomed: ' + path(zoomed).join(';');\n"
	"  mark();\n"
	"}\n"
	"function mark() {\n"
	"  var tot = 0;\n"
	"  Array.prototype.forEach.call(flame.children, function (e) {\n"
	"    var hit = !!re && e.getAttribute('data-name') !== '' && re.test(e.getAttribute('data-name'));\n"
	"    e.classList.toggle('match', hit);\n"
	"  });\n"
	"  if (!re) { matched.textContent = ''; return; }\n"
	"  (function walk(n, inside) { var hit = !inside && n !== root && re.test(n.name);\n"
	"    if (hit) tot += n.v[idx]; n.kids.forEach(function (k) { walk(k, inside || hit); }); })(root, false);\n"
	"  matched.textContent = 'matched: ' + fmt(tot, idx) + ' (' + pct(tot, root.v[idx]) + ')';\n"
	"}\n"
	"function state() {\n"
	"  var s = [];\n"
	"  if (zoomed !== root) s.push('zoom=' + encodeURIComponent(path(zoomed).join(';')));\n"
	"  if (idx !== D.index) s.push('index=' + M[idx]);\n"
	"  if (search.value) s.push('search=' + encodeURIComponent(search.value));\n"
	"  history.replaceState(null, '', s.length ? '#' + s.join('&') : location.pathname + location.search);\n"
	"}\n"
	"/* What a click does; a #zoom= fragment comes here too. */\n"
	"function zoomTo(n) { zoomed = n || root; render(); state(); }\n"
	"function setSearch(v) { search.value = v; try { re = v ? new RegExp(v) : null; search.style.background = ''; }\n"
	"  catch (e) { re = null; search.style.background = '#fcc'; } mark(); }\n"
	"/* The node whose path from the root ends with the given names (the heaviest first). */\n"
	"function find(names) {\n"
	"  var best = null;\n"
	"  N.forEach(function (n) { var p = path(n); if (p.length < names.length) return;\n"
	"    for (var j = 0; j < names.length; j++) if (p[p.length - names.length + j] !== names[j]) return;\n"
	"    if (!best || n.v[idx] > best.v[idx] || (n.v[idx] === best.v[idx] && n.depth < best.depth)) best = n; });\n"
	"  return best;\n"
	"}\n"
	"function fromHash() {\n"
	"  var h = location.hash.replace(/^#/, ''), z = null;\n"
	"  h.split('&').forEach(function (kv) { var k = kv.split('=')[0], v = decodeURIComponent(kv.slice(k.length + 1));\n"
	"    if (k === 'index' && M.indexOf(v) >= 0) { idx = M.indexOf(v); sel.value = idx; }\n"
	"    else if (k === 'search') search.value = v; else if (k === 'zoom') z = v; });\n"
	"  setSearch(search.value);\n"
	"  var n = z ? find(z.split(';')) : root;\n"
	"  if (z && !n) report('no frame path ' + z);\n"
	"  zoomTo(n);\n"
	"}\n"
	"flame.addEventListener('click', function (e) { var el = e.target.closest('.fr');\n"
	"  if (el) zoomTo(N[+el.getAttribute('data-id')]); });\n"
	"flame.addEventListener('mousemove', function (e) { var el = e.target.closest('.fr'); if (!el) return;\n"
	"  var n = N[+el.getAttribute('data-id')]; tip.textContent = describe(n); info.textContent = describe(n);\n"
	"  tip.style.display = 'block'; tip.style.left = Math.min(e.clientX + 12, window.innerWidth - 420) + 'px';\n"
	"  tip.style.top = (e.clientY + 14) + 'px'; });\n"
	"flame.addEventListener('mouseleave', function () { tip.style.display = 'none'; });\n"
	"sel.addEventListener('change', function () { idx = +sel.value; render(); state(); });\n"
	"search.addEventListener('input', function () { setSearch(search.value); state(); });\n"
	"document.getElementById('reset').addEventListener('click', function () { zoomTo(root); });\n"
	"window.addEventListener('hashchange', fromHash);\n"
	"window.addEventListener('resize', render);\n"
	"sel.value = idx;\n"
	"fromHash();\n"
	"info.textContent = describe(root);\n"
	"document.getElementById('status').textContent = 'ready: ' + N.length + ' frames';\n"
	"document.body.setAttribute('data-ready', '1');\n"
	"} catch (e) { report('exception: ' + (e && e.stack || e)); }\n"
	"})();\n"
	"</script>\n</body></html>\n";

int ap_flame_run(const char *trace, ap_view_opts *o)
{
	if (!o->output) {
		fprintf(stderr, "allocprof: flame writes an HTML file: give -o FILE.html\n");
		return 2;
	}
	ap_profile p;
	if (ap_view_load(&p, trace, o)) {
		ap_profile_free(&p);
		return 2;
	}
	fl_ctx c = {.o = o};
	fl_node root = {.parent = UINT32_MAX};
	AP_VEC_PUSH(c.nodes, root);
	fl_name(&c, "all");
	double total[AP_M__COUNT] = {0};
	ap_walk_stacks(&p, o, total, fl_one, &c);

	FILE *out = !strcmp(o->output, "-") ? stdout : fopen(o->output, "w");
	int rc = 0;
	if (!out) {
		fprintf(stderr, "allocprof: %s: cannot write: %m\n", o->output);
		rc = 2;
		goto done;
	}
	const char *base = p.exe ? strrchr(p.exe, '/') : NULL;
	const char *prog = base ? base + 1 : p.exe ? p.exe : "?";
	fputs(page_head, out);
	fputs("allocprof flame graph: ", out);
	html_str(out, prog);
	fputs(page_style, out);
	fputs("<div id=\"bar\"><b>allocprof</b><span>", out);
	html_str(out, prog);
	if (o->at && o->at_label[0]) {
		fputs(" &mdash; inuse at ", out);
		html_str(out, o->at_label);
	}
	if (o->temp_index)
		fputs(" &mdash; alloc_* figures are temporary allocations", out);
	fputs("</span><label>sample index <select id=\"index\"></select></label>"
	      "<input id=\"search\" placeholder=\"search (regex)\" size=\"24\">"
	      "<button id=\"reset\">reset zoom</button><span id=\"matched\"></span>"
	      "<span id=\"zoom\"></span></div>\n<div id=\"info\"></div>\n<div id=\"flame\"></div>"
	      "<div id=\"tip\"></div><div id=\"errors\"></div><div id=\"status\"></div>\n"
	      "<script type=\"application/json\" id=\"data\">{\"metrics\": [",
	      out);
	for (int m = 0; m < AP_M__COUNT; m++) {
		fputs(m ? ", " : "", out);
		/* With temp_*, the alloc slots hold the temporary figures: say so in the menu. */
		const char *nm = o->temp_index && m < 2 ? (m ? "temp_space" : "temp_objects") : ap_metric_names[m];
		js_str(out, nm);
	}
	fprintf(out, "], \"index\": %d, \"file\": ", o->sample_index);
	js_str(out, trace);
	fputs(", \"names\": [", out);
	for (size_t i = 0; i < c.names.n; i++) {
		fputs(i ? "," : "", out);
		js_str(out, c.names.v[i]);
	}
	/* Flat: parent, name, four figures per node; parents come before their children. */
	fputs("],\n\"nodes\": [", out);
	for (size_t i = 0; i < c.nodes.n; i++) {
		const fl_node *n = &c.nodes.v[i];
		fprintf(out, "%s%d,%u,%.0f,%.0f,%.0f,%.0f", i ? (i % 8 ? "," : ",\n") : "",
		        n->parent == UINT32_MAX ? -1 : (int)n->parent, n->name, n->v[0], n->v[1], n->v[2], n->v[3]);
	}
	fputs("]}</script>\n", out);
	fputs(page_script, out);
	if (out != stdout && fclose(out)) {
		fprintf(stderr, "allocprof: %s: write error: %m\n", o->output);
		rc = 2;
	} else if (out != stdout) {
		fprintf(stderr, "allocprof: wrote %s (%zu frames); open it in a browser\n", o->output, c.nodes.n);
	}
done:
	for (size_t i = 0; i < c.names.n; i++)
		free(c.names.v[i]);
	AP_VEC_FREE(c.names);
	AP_VEC_FREE(c.nodes);
	ap_map_free(&c.child);
	ap_map_free(&c.name_index);
	free(c.buf);
	ap_profile_free(&p);
	return rc;
}
