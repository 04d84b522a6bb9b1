package bucketfs

// DataGets is the number of GET requests for file data this mount made.
func (s *Server) DataGets() int64 { return s.fsys.st.gets.Load() }
