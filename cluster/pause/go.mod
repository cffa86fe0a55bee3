module github.com/modelops-dask/modelops-dask/cluster/pause

go 1.24
