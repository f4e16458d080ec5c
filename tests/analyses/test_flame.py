#!/usr/bin/env python3
"""Flame graph: `allocprof flame -o FILE.html` on analyses_prog, loaded in headless Chromium.

Checks the file is self-contained (no external URL is fetched), that its script ran without an
error (the page sets data-ready and writes errors into #errors), that a real click on a frame
zooms into it (through chromedriver's WebDriver protocol, spoken with urllib), that the #zoom=
fragment (the same function a click calls) and a search work, and keeps a screenshot
(flame.png) in --artifacts. Without chromedriver, the click is checked through the fragment and
--dump-dom only; without chromium the test is skipped (exit 77).
Standard library only.
"""

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import aptest  # noqa: E402

CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync',
               '--disable-dev-shm-usage', '--window-size=1200,800']


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class WebDriver:
    """The few WebDriver commands the test needs, as JSON over HTTP."""

    def __init__(self, driver, chrome, profile):
        self.port = free_port()
        self.proc = subprocess.Popen([driver, '--port=%d' % self.port], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.base = 'http://127.0.0.1:%d' % self.port
        for _ in range(100):
            try:
                self.call('GET', '/status')
                break
            except OSError:
                time.sleep(0.1)
        caps = {'capabilities': {'alwaysMatch': {'goog:chromeOptions': {
            'binary': chrome, 'args': CHROME_ARGS + ['--user-data-dir=' + profile]}}}}
        self.session = self.call('POST', '/session', caps)['sessionId']

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read().decode())['value']

    def s(self, method, path, body=None):
        return self.call(method, '/session/%s%s' % (self.session, path), body)

    def script(self, js):
        return self.s('POST', '/execute/sync', {'script': js, 'args': []})

    def close(self):
        try:
            self.s('DELETE', '')
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def dump_dom(t, chrome, url):
    profile = tempfile.mkdtemp(dir=t.tmp)
    p = t.run([chrome] + CHROME_ARGS + ['--user-data-dir=' + profile, '--dump-dom', url], timeout=90)
    return p.stdout.decode('utf-8', 'replace')


def main():
    t = aptest.Test('flame', extra_args=[(('--artifacts',), {'default': None})])
    chrome = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
    if not chrome:
        t.skip('chromium not installed (apt-get install chromium chromium-driver)')
    prog = t.prog('analyses')
    trace, _ = t.record([prog, 'base'], out=os.path.join(t.tmp, 'base.trace'))
    html = os.path.join(t.tmp, 'flame.html')
    p = t.run([t.allocprof, 'flame', '--sample-index=alloc_space', '-o', html, trace])
    if not t.check(p.returncode == 0 and os.path.exists(html), 'flame: %s\n%s' % (aptest.describe_status(p.returncode),
                                                                                   aptest.clip(p.stderr))):
        t.finish()
    with open(html, encoding='utf-8') as f:
        page = f.read()
    # Self-contained: no external script, stylesheet, image or fetch.
    t.check(not re.search(r'<(script|link|img|iframe)[^>]*\b(src|href)\s*=', page), 'flame: external resource')
    t.check(not re.search(r'https?://', page), 'flame: the page names a URL')
    t.check('fetch(' not in page and 'XMLHttpRequest' not in page, 'flame: the page fetches')
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))
    t.check_eq('flame metrics', data['metrics'], list(aptest.METRICS))
    # Node 0 is the root with every figure; the four figures of ramp_alloc are embedded.
    t.check_eq('flame root alloc_objects', data['nodes'][2], 2184)
    names = data['names']
    nodes = [data['nodes'][i:i + 6] for i in range(0, len(data['nodes']), 6)]
    ra = [n for n in nodes if names[n[1]] == 'ramp_alloc']
    t.check_eq('flame ramp_alloc figures', [n[2:] for n in ra], [[100, 100000, 0, 0]])

    url = 'file://' + html
    # The fragment: zoom and search, applied by the page's script after load.
    dom = dump_dom(t, chrome, url + '#zoom=ramp;ramp_alloc&search=^leak_')
    t.check('data-ready="1"' in dom, 'flame: the script did not finish (no data-ready):\n' + aptest.clip(dom))
    errs = re.search(r'<div id="errors">(.*?)</div>', dom, re.S)
    t.check(errs is not None and errs.group(1).strip() == '', 'flame: errors: %r' % (errs and errs.group(1)))
    t.check(re.search(r'id="zoom">zoomed: [^<]*;main;ramp;ramp_alloc<', dom), 'flame #zoom=: not zoomed:\n'
            + aptest.clip(re.sub(r'<script.*?</script>', '', dom, flags=re.S)))
    t.check(re.search(r'id="matched">matched: 1\.05kB \(0\.\d+%\)<', dom), 'flame search=^leak_: matched share')

    driver = shutil.which('chromedriver')
    if not driver:
        t.log('chromedriver not installed: a real click is not tested (apt-get install chromium-driver)')
        t.finish()
    wd = WebDriver(driver, chrome, tempfile.mkdtemp(dir=t.tmp))
    try:
        wd.s('POST', '/url', {'url': url})
        for _ in range(50):
            if wd.script('return document.body.getAttribute("data-ready")') == '1':
                break
            time.sleep(0.1)
        t.check_eq('flame (webdriver): ready', wd.script('return document.body.getAttribute("data-ready")'), '1')
        t.check_eq('flame (webdriver): errors', wd.script('return document.getElementById("errors").textContent'), '')
        el = wd.s('POST', '/element', {'using': 'css selector', 'value': '.fr[data-name="ramp"]'})
        eid = list(el.values())[0]
        wd.s('POST', '/element/%s/click' % eid, {})
        zoom = wd.script('return document.getElementById("zoom").textContent')
        t.check(re.fullmatch(r'zoomed: .*;main;ramp', zoom or ''), 'flame click: zoom label %r' % zoom)
        # After the zoom, ramp spans the whole width and its children share it by alloc_space.
        w = wd.script('var f = document.getElementById("flame").clientWidth;'
                      'var r = document.querySelector(\'.fr[data-name="ramp"]:not(.dim)\');'
                      'var a = document.querySelector(\'.fr[data-name="ramp_alloc"]\');'
                      'return [f, parseFloat(r.style.width), parseFloat(a.style.width)];')
        t.check(abs(w[1] - w[0]) < 1.5, 'flame click: ramp is %r px wide of %r' % (w[1], w[0]))
        t.check(abs(w[2] - w[0] * 100000 / 110000) < 2, 'flame click: ramp_alloc is %r px of %r' % (w[2], w[0]))
        t.check('zoom=' in wd.script('return location.hash'), 'flame click: the fragment keeps the zoom')
        # Switching the sample index re-draws: by alloc_objects ramp_alloc is 100 of 150.
        wd.script('var s = document.getElementById("index"); s.value = 0; s.dispatchEvent(new Event("change"));')
        w = wd.script('var f = document.getElementById("flame").clientWidth;'
                      'var a = document.querySelector(\'.fr[data-name="ramp_alloc"]\');'
                      'return [f, parseFloat(a.style.width)];')
        t.check(abs(w[1] - w[0] * 100 / 150) < 2, 'flame alloc_objects: ramp_alloc %r px of %r' % (w[1], w[0]))
        shot = wd.s('GET', '/screenshot')
        dest = os.path.join(t.args.artifacts or t.tmp, 'flame.png')
        with open(dest, 'wb') as f:
            f.write(base64.b64decode(shot))
        t.log('screenshot: ' + dest)
        if t.args.artifacts:
            shutil.copy(html, os.path.join(t.args.artifacts, 'flame.html'))
    except (OSError, ValueError, KeyError, TypeError) as e:
        t.fail('webdriver: %s' % e)
    finally:
        wd.close()
    t.finish()


if __name__ == '__main__':
    main()
