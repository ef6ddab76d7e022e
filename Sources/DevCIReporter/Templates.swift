import Mustache

/// The reporter's pages. Mustache escapes every `{{value}}` for HTML; only `{{{content}}}` (a page this
/// reporter rendered itself) and `{{{svg}}}` (drawn here from numbers) are inserted raw. No inline script or
/// style: the Content-Security-Policy forbids them; what the script needs is in data- attributes.
enum Templates {
    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        for (name, text) in [("layout", layout), ("dashboard", dashboard), ("rows", rows), ("build", build), ("runners", runners),
                             ("repo", repo), ("error", error), ("signin", signin), ("tests", tests), ("flaky", flaky),
                             ("testHistory", testHistory)] {
            try! library.register(text, named: name)
        }
        return library
    }()

    static func render(_ name: String, _ object: Any) -> String {
        library.render(object, withTemplate: name) ?? ""
    }

    static let layout = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · DevCI</title><link rel="stylesheet" href="/static/devci.css">{{#reload}}<meta http-equiv="refresh" content="{{reload}}">{{/reload}}</head>
        <body data-live="{{live}}">
        <header><a class="brand" href="/">DevCI</a><nav><a href="/">Builds</a><a href="/runners">Runners</a></nav>
        <span class="summary" id="summary">{{#summary}}<b>{{queued}}</b> queued · <b>{{running}}</b> running · <b>{{runners}}</b> runner(s) connected{{#waitingText}} · <b class="waiting">{{waitingText}}</b>{{/waitingText}}{{/summary}}</span>
        <span class="viewer">{{#user}}signed in as <b>{{name}}</b>{{#admin}} (administrator){{/admin}} <form class="inline" method="post" action="/signout"><input type="hidden" name="csrf" value="{{csrf}}"><button>Sign out</button></form>{{/user}}{{#signin}}<a href="/signin?next={{next}}">Sign in</a>{{/signin}}</span></header>
        <main>{{{content}}}</main>
        <script src="/static/devci.js"></script></body></html>
        """

    static let dashboard = """
        <h1>Builds</h1>
        <form class="filters" method="get" action="/">
          <label>Repository <select name="repo"><option value="">all</option>{{#repos}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{name}}</option>{{/repos}}</select></label>
          <label>Branch <input name="branch" value="{{branch}}" placeholder="any"></label>
          <label>Task <select name="task"><option value="">any</option>{{#tasks}}<option{{#selected}} selected{{/selected}}>{{value}}</option>{{/tasks}}</select></label>
          <label>Tag <input name="tag" value="{{tag}}" placeholder="any"></label>
          <label>State <select name="status"><option value="">any</option>{{#statuses}}<option{{#selected}} selected{{/selected}}>{{value}}</option>{{/statuses}}</select></label>
          <button>Filter</button>
        </form>
        <table class="builds"><thead><tr><th>Status</th><th>#</th><th>Repository or task</th><th>Branch</th><th>Commit</th><th>Runner</th><th>Started</th><th>Duration</th><th title="The first try plus every retry and reassignment of the build's jobs (1: every job ran once)">Attempts</th></tr></thead>
        <tbody id="rows" data-fragment="{{fragmentURL}}" data-seen="{{seen}}">{{> rows}}</tbody></table>
        <p class="pages">{{#newer}}<a href="{{newer}}">← newer</a>{{/newer}} page {{page}} {{#older}}<a href="{{older}}">older →</a>{{/older}}</p>
        """

    static let rows = """
        {{#builds}}<tr><td><span class="status s-{{statusClass}}">{{status}}</span></td><td><a href="/builds/{{id}}">{{id}}</a></td>
        <td>{{#what}}<span class="what">{{what}}</span> {{/what}}{{#hasRepo}}<a href="/repos/{{repoPath}}">{{repoName}}</a>{{/hasRepo}}</td><td>{{branch}}</td>
        <td><code>{{shortCommit}}</code> <span class="title">{{title}}</span>{{#author}} <span class="author">— {{author}}</span>{{/author}}</td>
        <td>{{runner}}</td><td>{{started}}</td><td class="duration" data-started="{{startedMillis}}" data-finished="{{finishedMillis}}">{{duration}}</td><td>{{attempts}}</td></tr>
        {{/builds}}{{^builds}}<tr><td colspan="9" class="empty">No builds yet.</td></tr>{{/builds}}
        """

    static let build = """
        <h1 data-build="{{id}}" data-after="{{after}}"><span class="status s-{{statusClass}}" id="build-status">{{status}}</span> Build {{id}}</h1>
        <p class="meta">{{#what}}<b>{{what}}</b>{{#hasRepo}} · {{/hasRepo}}{{/what}}{{#hasRepo}}<a href="/repos/{{repoPath}}">{{repo}}</a> · {{branch}} · <code>{{commit}}</code>{{/hasRepo}}{{#title}} · {{title}}{{/title}}{{#author}} — {{author}}{{/author}}{{#tags}} <span class="tag">{{tag}}</span>{{/tags}}</p>
        {{#ancestor}}<p class="meta">ancestor: <a href="/builds/{{ancestor}}">build {{ancestor}}</a>, whose success started this run</p>{{/ancestor}}
        {{#bisects}}<p class="meta">a bisection build: one of the commits not built before <a href="/builds/{{bisects}}">build {{bisects}}</a> failed, built to find which commit broke the branch</p>{{/bisects}}
        {{#bisection}}<div class="bisection" id="bisection">{{#found}}<p><b>Broken by <code>{{commit}}</code></b>{{#title}} “{{title}}”{{/title}}{{#author}} — {{author}}{{/author}}</p>{{/found}}{{#running}}<p><b>Bisecting</b>: {{count}} commit(s) were not built between <a href="/builds/{{good}}">build {{good}}</a> (passed) and this one; {{#current}}<a href="/builds/{{current}}">build {{current}}</a> is trying one ({{run}} of at most {{max}} builds).{{/current}}</p>{{/running}}{{#stopped}}<p><b>Bisection stopped</b> after {{run}} build(s).</p>{{/stopped}}<p class="meta">{{reason}}{{#builds}} · bisection builds: {{#list}}<a href="/builds/{{id}}">{{id}}</a> {{/list}}{{/builds}}</p></div>{{/bisection}}
        {{#descendants}}<p class="meta">descendants: {{#builds}}<a href="/builds/{{id}}">build {{id}}</a> {{/builds}}</p>{{/descendants}}
        {{#reason}}<p class="meta build-reason">{{reason}}</p>{{/reason}}
        {{#actions}}<div class="actions">{{#rerun}}<form method="post" action="/builds/{{id}}/rerun"><input type="hidden" name="csrf" value="{{csrf}}"><button>Re-run</button></form>{{/rerun}}{{#rerunFailed}}<form method="post" action="/builds/{{id}}/rerun-failed"><input type="hidden" name="csrf" value="{{csrf}}"><button>Re-run failed jobs</button></form>{{/rerunFailed}}{{#cancel}}<form method="post" action="/builds/{{id}}/cancel"><input type="hidden" name="csrf" value="{{csrf}}"><button class="danger">Cancel</button></form>{{/cancel}}</div>{{/actions}}
        <p class="meta">enqueued {{created}}{{#scheduled}} · scheduled {{scheduled}}{{/scheduled}} · started <span id="build-started">{{started}}</span>{{#ended}} · ended {{ended}}{{/ended}}{{#runner}} · runner {{runner}}{{/runner}} · duration <span class="duration" id="build-duration" data-started="{{startedMillis}}" data-finished="{{finishedMillis}}">{{duration}}</span></p>
        {{#tests}}<section class="tests" id="tests"><h2>Tests</h2><p class="meta"><b>{{failed}}</b> failed · {{passed}} passed · {{skipped}} skipped{{#flipped}} · {{flipped}} passed on one attempt and failed on another{{/flipped}}</p>
        {{#onlyFlaky}}<p class="flaky-note">Every test that failed is known to be flaky in this repository: this failure may not be the change's. <a href="/repos/{{repoPath}}/flaky">Flaky tests</a></p>{{/onlyFlaky}}
        <table class="builds tests"><thead><tr><th>Status</th><th>Test</th><th>Job</th><th>Time</th></tr></thead><tbody>
        {{#rows}}<tr><td><span class="status s-{{statusClass}}">{{status}}</span>{{#flaky}} <span class="tag">flaky</span>{{/flaky}}</td><td><a href="{{history}}">{{fullName}}</a>{{#message}}<pre class="test-message">{{message}}</pre>{{/message}}</td><td>{{job}}{{#attemptNote}} <small>{{attemptNote}}</small>{{/attemptNote}}</td><td>{{duration}}</td></tr>{{/rows}}
        </tbody></table>{{#more}}<p class="meta"><a href="?tests=all#tests">Show the {{more}} passing or skipped test(s)</a></p>{{/more}}</section>{{/tests}}
        {{#stages}}<section class="stage"><h2>{{name}}</h2>
        {{#jobs}}<article class="job" id="job-{{id}}" data-attempt="{{attempt}}"><h3><span class="status s-{{statusClass}}" id="status-{{id}}">{{status}}</span> {{name}}
          {{#allowFailure}}<small>(allowed to fail)</small>{{/allowFailure}}</h3>
          <p class="meta">runner <span id="runner-{{id}}">{{runner}}</span> · attempt <span id="attempt-{{id}}">{{attempt}}</span> · started <span id="started-{{id}}">{{started}}</span> · <span class="duration" id="duration-{{id}}" data-started="{{startedMillis}}" data-finished="{{finishedMillis}}">{{duration}}</span><span class="reason" id="reason-{{id}}">{{reason}}</span></p>
          {{#history}}<ul class="history">{{#events}}<li>{{at}} {{state}}{{#runner}} on {{runner}}{{/runner}}{{#reason}}: {{reason}}{{/reason}}</li>{{/events}}</ul>{{/history}}
          {{#artifacts}}<div class="artifacts"><b>Artifacts</b><ul>{{#files}}<li><a href="{{link}}" download>{{path}}</a> <small>{{size}}</small></li>{{/files}}</ul></div>{{/artifacts}}
          <p class="meta">{{#truncated}}Showing the last {{shown}} lines. {{/truncated}}<a href="/jobs/{{id}}/log.txt">Whole log as text</a></p>
          <pre class="log" id="log-{{id}}">{{#lines}}<span class="l {{stream}}" data-attempt="{{attempt}}"><time>{{time}}</time>{{#attemptTag}}<i>#{{attempt}}</i>{{/attemptTag}} {{text}}
        </span>{{/lines}}</pre></article>{{/jobs}}
        </section>{{/stages}}
        """

    static let runners = """
        <h1>Runners</h1>
        <table class="builds"><thead><tr><th>State</th><th>Name</th><th>Host</th><th>Connected since</th><th>Last heartbeat</th><th>Current job</th><th>Jobs run</th><th>Lost recently</th></tr></thead><tbody>
        {{#runners}}<tr><td><span class="status s-{{stateClass}}">{{state}}</span></td><td>{{name}}</td><td>{{host}}</td><td>{{connectedAt}}</td><td>{{lastHeartbeat}}</td>
        <td>{{#current}}<a href="{{link}}">job {{id}}</a> {{/current}}</td><td>{{jobsRun}}</td><td>{{#lost}}<a href="{{link}}">job {{id}}</a> {{/lost}}</td></tr>{{/runners}}
        {{^runners}}<tr><td colspan="8" class="empty">No runner has connected yet.</td></tr>{{/runners}}
        </tbody></table>
        """

    static let repo = """
        <h1>{{name}}</h1><p class="meta">{{repo}} · <img alt="status" src="{{badgeURL}}"> · pass rate {{passRate}} over the last {{count}} finished builds</p>
        <figure class="chart">{{{svg}}}<figcaption>Duration of the last builds (bar height), coloured by status.</figcaption></figure>
        <p><a href="/?repo={{query}}">All builds of {{name}}</a> · <a href="/repos/{{namePath}}/tests?branch={{branchQuery}}">Tests of {{branch}}: slowest and getting slower</a> · <a href="/repos/{{namePath}}/flaky">Flaky tests</a></p>
        """

    static let tests = """
        <h1>Tests of {{name}} · {{branch}}</h1>
        <form class="filters" method="get"><label>Branch <input name="branch" value="{{branch}}"></label><button>Show</button></form>
        <p class="meta">Over the last {{builds}} builds of {{branch}}: passing runs only, durations as the test reports gave them; getting slower: the newer half of its runs at least a quarter and 20 ms slower than the older half. <a href="/repos/{{namePath}}/flaky">Flaky tests</a></p>
        <h2>Getting slower</h2>
        <table class="builds"><thead><tr><th>Test</th><th>Runs</th><th>Older half</th><th>Newer half</th><th>Slower by</th></tr></thead><tbody>
        {{#slower}}<tr><td><a href="{{history}}">{{fullName}}</a></td><td>{{runs}}</td><td>{{older}}</td><td>{{newer}}</td><td>{{slowdown}}</td></tr>{{/slower}}
        {{^slower}}<tr><td colspan="5" class="empty">No test got slower.</td></tr>{{/slower}}</tbody></table>
        <h2>Slowest</h2>
        <table class="builds"><thead><tr><th>Test</th><th>Runs</th><th>Mean</th></tr></thead><tbody>
        {{#slowest}}<tr><td><a href="{{history}}">{{fullName}}</a></td><td>{{runs}}</td><td>{{mean}}</td></tr>{{/slowest}}
        {{^slowest}}<tr><td colspan="3" class="empty">No test results on {{branch}} yet: add reports: {junit: [...]} to a job, or run unittest -v or pytest -rA.</td></tr>{{/slowest}}</tbody></table>
        """

    static let flaky = """
        <h1>Flaky tests of {{name}}</h1>
        <p class="meta">A test is flaky when it both passed and failed on one commit (a retry, a re-run or a reassigned attempt), or when its result changed between at least {{minRate}} of its last runs (at least {{minRuns}} of them), over the last {{window}} builds.</p>
        <table class="builds"><thead><tr><th>Test</th><th>Flip rate</th><th>Runs</th><th>Last commits where it flipped</th><th>First seen</th></tr></thead><tbody>
        {{#tests}}<tr><td><a href="{{history}}">{{fullName}}</a> <small>in {{job}}</small></td><td>{{rate}}</td><td>{{runs}}</td><td>{{#flips}}<a href="/builds/{{build}}"><code>{{commit}}</code></a> {{/flips}}</td><td>{{firstSeen}}</td></tr>{{/tests}}
        {{^tests}}<tr><td colspan="5" class="empty">No flaky test found.</td></tr>{{/tests}}</tbody></table>
        """

    static let testHistory = """
        <h1>{{fullName}}</h1><p class="meta"><a href="/repos/{{namePath}}">{{name}}</a> · {{passed}} passed, {{failed}} failed, {{skipped}} skipped in its last {{count}} runs{{#flaky}} · <b>known flaky</b>{{/flaky}}</p>
        <table class="builds"><thead><tr><th>Status</th><th>Build</th><th>Branch</th><th>Commit</th><th>Job</th><th>Attempt</th><th>Time</th><th>When</th></tr></thead><tbody>
        {{#runs}}<tr><td><span class="status s-{{statusClass}}">{{status}}</span></td><td><a href="/builds/{{build}}#tests">{{build}}</a></td><td>{{branch}}</td><td><code>{{commit}}</code></td><td>{{job}}</td><td>{{attempt}}</td><td>{{duration}}</td><td>{{at}}</td></tr>{{#message}}<tr class="message"><td></td><td colspan="7"><pre class="test-message">{{message}}</pre></td></tr>{{/message}}{{/runs}}
        {{^runs}}<tr><td colspan="8" class="empty">No runs of this test.</td></tr>{{/runs}}</tbody></table>
        """

    static let signin = """
        <h1>Sign in</h1>
        {{#required}}<p>This DevCI asks everyone to sign in.</p>{{/required}}
        {{#error}}<p class="form-error" role="alert">{{error}}</p>{{/error}}
        <form class="signin" method="post" action="/signin">
          <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="next" value="{{next}}">
          <label>User <input name="user" autocomplete="username" required maxlength="64" autofocus></label>
          <label>Password <input name="password" type="password" autocomplete="current-password" required maxlength="256"></label>
          <button>Sign in</button>
        </form>
        """

    static let error = """
        <h1>{{code}}</h1><p>{{message}}</p><p><a href="/">Back to the builds</a></p>
        """
}
