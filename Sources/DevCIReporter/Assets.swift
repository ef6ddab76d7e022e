/// The reporter's only assets, served from memory: nothing from the internet, no file paths.
enum Assets {
    static let css = """
        :root{--ok:#1a7f37;--bad:#cf222e;--run:#bf8700;--idle:#6e7781;--bg:#f6f8fa;--fg:#1f2328}
        *{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:#fff}
        header{display:flex;gap:1.5em;align-items:center;padding:.6em 1.2em;background:#24292f;color:#fff}
        header a{color:#fff;text-decoration:none;margin-right:1em}.brand{font-weight:700;font-size:1.2em}.summary{margin-left:auto;opacity:.9}
        main{padding:1em 1.2em;max-width:1400px}h1{font-size:1.4em;margin:.3em 0 .6em}h2{font-size:1.1em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
        h3{font-size:1em;margin:.4em 0}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #eaeef2;vertical-align:top}
        th{background:var(--bg);font-weight:600}code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}.title{color:#444}.author{color:var(--idle)}
        .status{display:inline-block;min-width:5.5em;text-align:center;border-radius:1em;padding:0 .6em;color:#fff;font-weight:600;font-size:12px;background:var(--idle)}
        .s-success{background:var(--ok)}.s-allowed{background:#4d8f5a}.s-failed,.s-error,.s-timed_out{background:var(--bad)}
        .s-running,.s-assigned,.s-connected{background:var(--run)}.s-started{background:var(--run)}.tag{display:inline-block;border:1px solid #d0d7de;border-radius:1em;padding:0 .5em;font-size:.85em;margin-left:.2em}.what{font-weight:600}.build-reason{color:var(--bad)}.test-message{max-height:14em;overflow:auto;margin:.3em 0 .1em;font-size:.85em;white-space:pre-wrap;background:#f6f8fa;padding:.3em .5em;border-radius:4px}.bisection{border-left:4px solid var(--bad);padding:.1em .8em;margin:.6em 0;background:#fff8f8}.flaky-note{border-left:4px solid #d4a72c;padding:.3em .8em;background:#fffbea}.waiting{color:#ffd33d}.s-queued,.s-pending,.s-skipped,.s-cancelled,.s-disconnected,.s-lost{background:var(--idle)}
        .s-connected{background:var(--ok)}.s-lost{background:var(--bad)}
        .filters{display:flex;gap:1em;margin-bottom:1em;flex-wrap:wrap;align-items:end}.filters label{display:flex;flex-direction:column;font-size:12px;color:var(--idle)}
        .meta{color:#57606a;margin:.2em 0}.reason{color:var(--bad)}.reason:not(:empty)::before{content:" · ";color:#57606a}.empty{color:var(--idle);text-align:center;padding:2em}
        .job{border:1px solid #d0d7de;border-radius:6px;padding:.5em .8em;margin:.6em 0}
        .log{background:#0d1117;color:#e6edf3;padding:.6em;border-radius:6px;max-height:28em;overflow:auto;font:12px/1.4 ui-monospace,Menlo,monospace;white-space:pre-wrap;word-break:break-all}
        .log time{color:#7d8590;margin-right:.6em}.log i{color:#d2a8ff;font-style:normal;margin-right:.4em}.l.err{color:#ffa657}.l.system{color:#79c0ff}
        .history{margin:.2em 0;padding-left:1.2em;color:#57606a;font-size:12px}.pages{margin-top:1em}.chart svg{max-width:100%;height:auto;border:1px solid #d0d7de;border-radius:6px}
        .viewer{font-size:13px}form.inline{display:inline;margin-left:.5em}
        .viewer button,form.inline button{background:transparent;color:#fff;border:1px solid #8c959f;border-radius:4px;padding:.1em .6em;cursor:pointer;font:inherit}
        .actions{display:flex;gap:.6em;margin:.6em 0}.actions button{border:1px solid #d0d7de;background:var(--bg);border-radius:6px;padding:.3em .9em;cursor:pointer;font:inherit;font-weight:600}
        .actions button:hover{background:#eaeef2}.actions button.danger{color:var(--bad);border-color:#ff8182}
        .signin{display:flex;flex-direction:column;gap:.8em;max-width:22em}.signin label{display:flex;flex-direction:column;font-size:12px;color:var(--idle)}
        .signin input{font:inherit;padding:.4em .5em;border:1px solid #d0d7de;border-radius:6px;color:var(--fg)}
        .signin button{align-self:flex-start;font:inherit;font-weight:600;padding:.4em 1.2em;border:1px solid #1a7f37;background:var(--ok);color:#fff;border-radius:6px;cursor:pointer}
        .form-error{color:var(--bad);font-weight:600}
        """

    /// Live updates through Server-Sent Events; text from the server is set with textContent, never parsed as HTML,
    /// except the dashboard's rows, which the server renders and escapes itself. Loaded as a file, never inline
    /// (the Content-Security-Policy allows no inline script): what it needs of a page is in data- attributes.
    static let js = """
        (function () {
          function fmt(ms) { return new Date(ms).toISOString().replace('T', ' ').slice(0, 23); }
          // Times and durations as the server renders them: UTC to the second, "12.3s" or "4m05s".
          function time(ms) { return ms == null ? '–' : fmt(ms).slice(0, 19); }
          function durationText(ms) {
            var s = Math.max(0, ms) / 1000;
            return s < 60 ? s.toFixed(1) + 's' : Math.floor(s / 60) + 'm' + ('0' + Math.floor(s % 60)).slice(-2) + 's';
          }
          function setText(id, text) { var el = document.getElementById(id); if (el) el.textContent = text; }
          function setStatus(el, status, text) { if (!el) return; el.textContent = text || status.replace('_', ' '); el.className = 'status s-' + status; }
          // A duration element holds its start and end (milliseconds); one still running is redrawn every second.
          function showDuration(el) {
            var s = el.dataset.started, f = el.dataset.finished;
            el.textContent = s ? durationText((f ? +f : Date.now()) - +s) : '–';
          }
          function setDuration(el, started, finished) {
            if (!el) return;
            el.dataset.started = started == null ? '' : started;
            el.dataset.finished = finished == null ? '' : finished;
            showDuration(el);
          }
          setInterval(function () {
            document.querySelectorAll('.duration').forEach(function (el) { if (el.dataset.started && !el.dataset.finished) showDuration(el); });
          }, 1000);
          function attemptTag(n) { var i = document.createElement('i'); i.textContent = '#' + n; return i; }
          // Once a job runs a second time, every line of its log says which attempt wrote it.
          function tagLines(job) {
            var article = document.getElementById('job-' + job);
            if (!article || +article.dataset.attempt < 2) return;
            document.querySelectorAll('#log-' + job + ' .l').forEach(function (l) {
              if (!l.querySelector('i')) l.insertBefore(attemptTag(l.dataset.attempt), l.querySelector('time').nextSibling);
            });
          }
          var build = document.querySelector('[data-build]');
          if (build) {
            var es = new EventSource('/builds/' + build.dataset.build + '/events?after=' + build.dataset.after);
            es.addEventListener('log', function (e) {
              var l = JSON.parse(e.data), pre = document.getElementById('log-' + l.job), article = document.getElementById('job-' + l.job);
              if (!pre) return;
              var near = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 40;
              var span = document.createElement('span'), t = document.createElement('time');
              span.className = 'l ' + l.stream; span.dataset.attempt = l.attempt; t.textContent = fmt(l.ts);
              span.appendChild(t);
              if (article && +article.dataset.attempt > 1) span.appendChild(attemptTag(l.attempt));
              span.appendChild(document.createTextNode(' ' + l.text + '\\n'));
              pre.appendChild(span);
              while (pre.childNodes.length > 2000) pre.removeChild(pre.firstChild);
              if (near) pre.scrollTop = pre.scrollHeight;
            });
            es.addEventListener('job', function (e) {
              var j = JSON.parse(e.data), article = document.getElementById('job-' + j.id);
              setStatus(document.getElementById('status-' + j.id), j.status);
              setText('runner-' + j.id, j.runner || '–');
              setText('attempt-' + j.id, j.attempt);
              setText('started-' + j.id, time(j.started));
              setText('reason-' + j.id, j.reason || '');
              setDuration(document.getElementById('duration-' + j.id), j.started, j.finished);
              if (article) { article.dataset.attempt = j.attempt; tagLines(j.id); }
            });
            es.addEventListener('build', function (e) {
              var b = JSON.parse(e.data);
              setStatus(document.getElementById('build-status'), b.statusClass, b.display);
              setText('build-started', time(b.started));
              setDuration(document.getElementById('build-duration'), b.started, b.finished);
            });
            es.addEventListener('end', function () { es.close(); });
          } else if (document.getElementById('rows')) {
            var rows = document.getElementById('rows');
            var live = new EventSource('/events' + (location.search ? location.search + '&' : '?') + 'seen=' + encodeURIComponent(rows.dataset.seen));
            live.addEventListener('changed', function (e) {
              var s = JSON.parse(e.data);
              var text = s.queued + ' queued · ' + s.running + ' running · ' + s.runners + ' runner(s) connected' + (s.waiting ? ' · ' + s.waiting : '');
              document.getElementById('summary').textContent = text;
              fetch(rows.dataset.fragment).then(function (r) { return r.text(); }).then(function (html) { rows.innerHTML = html; });
            });
          }
        })();
        """
}
