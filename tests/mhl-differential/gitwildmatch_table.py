# Regenerates tests/fixtures/mhl/gitwildmatch.json: which of a set of paths each pattern list
# matches, by pathspec (the library ascmhl uses), for the unit test of src/mhl/ignore.rs.
# Run with the ascmhl venv python: python gitwildmatch_table.py > ../fixtures/mhl/gitwildmatch.json
import pathspec, itertools, json, warnings
warnings.simplefilter("ignore")
pats = ["*.mov","!A001.mov","Proxy/*.mov","Proxy/**/b.mov","sub/","**/x","a/**","/top.mov","c?.mov","[AB]00*.mov","[!a]*.wav","*/","*","**","deep/","**/","d*/e","x\\*y","a/**/b","#c"," lead.mov","trail.mov  ","ünï*"]
paths = ["A001.mov","B002.mov","Clips/A001.mov","Proxy/a.mov","Proxy/sub/b.mov","Proxy/b.mov","sub/","x/sub/","x/sub/f","top.mov","d/top.mov","c1.mov","c12.mov","a.wav","b.wav","a/","a/f","a/b","a/x/b","x","y/x","deep/","deep/er/z.mov","de/e","dx/e","x*y","xay"," lead.mov","lead.mov","trail.mov","ünïcode/"]
rows=[]
import random
r=random.Random(7)
sets=[[p] for p in pats]+[r.sample(pats,3) for _ in range(25)]
for s in sets:
    spec=pathspec.PathSpec.from_lines("gitwildmatch", s)
    rows.append((s,[p for p in paths if spec.match_file(p)]))
print("[\n" + ",\n".join(json.dumps(x, ensure_ascii=False) for x in rows) + "\n]")
