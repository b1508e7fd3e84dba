// bluegreen's njs module for nginx: the upstream of each request, read from the file bluegreen switches.
//
//   js_import /path/to/bluegreen.js;
//   js_set $bluegreen_upstream bluegreen.upstream;
//   server { set $bluegreen_file /path/to/upstream; set $bluegreen_app myapp; ...
//            proxy_pass http://$bluegreen_upstream; }
//
// The file holds `blue`, `green`, or a split such as `blue 90 green 10` (percent of requests). It is read
// on every request, so an atomic rename of it switches the very next request, with no reload (a reload
// closes kept-alive client connections). The answer is the name of an upstream{} block:
// `<$bluegreen_app>_blue` or `<$bluegreen_app>_green`, so upstream keepalive works.
//
// A file that is missing, unreadable or holds anything else gives "" (the config answers 502 for that,
// never a guessed colour), and a line in the error log that says what was found.
import fs from 'fs';

const COLOURS = ['blue', 'green'];

// [[colour, percent], ...] for a valid file, else null. bluegreen's read() applies the same rules.
function parse(text) {
    const value = text.trim();
    if (value == 'blue' || value == 'green') {  // the common case first: no split, no regular expression
        return [[value, 100]];
    }
    const words = value.split(/\s+/);
    if (words.length != 4 || words[0] == words[2] || !COLOURS.includes(words[0]) || !COLOURS.includes(words[2])
        || !/^\d{1,3}$/.test(words[1]) || !/^\d{1,3}$/.test(words[3])) {
        return null;
    }
    const split = [[words[0], Number(words[1])], [words[2], Number(words[3])]];
    return split[0][1] + split[1][1] == 100 ? split : null;
}

function upstream(r) {
    const file = r.variables.bluegreen_file;
    let text;
    try {
        text = fs.readFileSync(file, 'utf8');
    } catch (e) {
        r.warn(`bluegreen: no live colour: cannot read $bluegreen_file ${file}: ${e.message}`);
        return '';
    }
    const split = parse(text);
    if (!split) {
        r.error(`bluegreen: ${file} holds ${JSON.stringify(text.slice(0, 80))}, which is neither blue nor green`
                + ` nor a split like "blue 90 green 10": answering 502`);
        return '';
    }
    let colour = split[split.length - 1][0];
    if (split.length == 2 && Math.random() * 100 < split[0][1]) {
        colour = split[0][0];
    }
    const app = r.variables.bluegreen_app;
    return app ? `${app}_${colour}` : colour;
}

export default {upstream, parse};
