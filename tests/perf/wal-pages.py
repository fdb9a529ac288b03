#!/usr/bin/env python3
# Which tables the store's WAL frames belong to, per transaction kind (issue 14, SD-card care):
#   python3 tests/perf/wal-pages.py STATE_DIR
# Reads STATE_DIR/store.db-wal (the frames since the last checkpoint), maps each frame's page
# to its table or index with SQLite's dbstat on a copy, and prints pages per kind of transaction.
# Not a test: it prints numbers.
import struct, sys, sqlite3, shutil, collections, os, tempfile
d=sys.argv[1]
wal=open(d+'/store.db-wal','rb').read()
magic, ver, psz, ckseq, s1, s2, c1, c2 = struct.unpack('>IIIIIIII', wal[:32])
frames=[]; off=32
while off+24+psz <= len(wal):
    pg, commit, fs1, fs2 = struct.unpack('>IIII', wal[off:off+16])
    if (fs1,fs2)!=(s1,s2): break
    frames.append((pg,commit)); off+=24+psz
t=tempfile.mkdtemp(); shutil.copy(d+'/store.db', t+'/x.db'); shutil.copy(d+'/store.db-wal', t+'/x.db-wal')
c=sqlite3.connect(t+'/x.db')
owner={pg:name for name,pg in c.execute('select name, pageno from dbstat')}
tx=[]; cur=[]
for pg,commit in frames:
    cur.append(pg)
    if commit: tx.append(cur); cur=[]
print(len(frames),'frames', len(tx),'transactions')
kinds=collections.Counter(); pages=collections.Counter()
for t_ in tx:
    names=tuple(sorted(set(owner.get(p,'?%d'%p if p>0 else '?') for p in t_)))
    key=tuple(sorted(set(n.split('_')[0] if n.startswith('readings') else n for n in names)))
    kinds[key]+=1; pages[key]+=len(t_)
for k,v in pages.most_common(25): print(v,'pages in',kinds[k],'tx:',k)
shutil.rmtree(t)
